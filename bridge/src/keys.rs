//! The Zenoh keys of streams: a stream's key under its prefix ([`key`]), the key its lost
//! lossless frames are asked for again on ([`resend_key`]), and the names refused before
//! anything is opened for the keys they would make ([`check_keys`]).

use crate::BridgeError;

/// The key of stream `name` under `prefix`.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{}/{name}", prefix.trim_end_matches('/'))
}

/// The last `/` part of the key a lossless publisher takes requests for frames again on
/// ([`resend_key`]); no stream name may end with it ([`check_keys`]).
const RESEND_PART: &str = "@resend";

/// The key under which a lossless publisher of stream key `k` answers a subscriber's
/// [`crate::codec::ResendRequest`] with the frames it asks for, from the source's history: its
/// queryable there tells a subscriber that it answers (one of an older bridge does not).
pub fn resend_key(k: &str) -> String {
    format!("{k}/{RESEND_PART}")
}

/// Refuses, before anything is opened, a prefix or name whose key Zenoh would read as a
/// wildcard (`*`, `**`, `$*`: it would reach other streams) or refuse (`?`, `#`, a lone `$`,
/// an empty chunk), and a name given twice: its frames would go out twice on one key, or be
/// written twice into one mirror. (Distinct names give distinct keys and local names under
/// one prefix. Across prefixes, names holding `/` may share a key: `c` under `a/b` and `b/c`
/// under `a` both put on `a/b/c`; each frame's attachment gives its stream name's length,
/// and a subscriber refuses the other stream's frames, naming both.)
pub(crate) fn check_keys(prefix: &str, names: &[String]) -> Result<(), BridgeError> {
    use zenoh::key_expr::nonwild_keyexpr;
    let mut seen = std::collections::HashSet::new();
    const WHY: &str =
        "for its wildcard or reserved characters (`*`, `$`, `?`, `#`) or empty '/' parts";
    if nonwild_keyexpr::new(prefix.trim_end_matches('/')).is_err() {
        return Err(BridgeError::Usage(format!(
            "--key-prefix '{prefix}' cannot be carried over Zenoh, {WHY}: give one without them"
        )));
    }
    for name in names {
        let k = key(prefix, name);
        if nonwild_keyexpr::new(k.as_str()).is_err() {
            return Err(BridgeError::Usage(format!(
                "stream '{name}': its name cannot be carried over Zenoh (key '{k}'), {WHY}: \
                 rename the stream without them"
            )));
        }
        if name.rsplit('/').next() == Some(RESEND_PART) {
            return Err(BridgeError::Usage(format!(
                "stream '{name}': a name whose last '/' part is '{RESEND_PART}' would share its \
                 key ('{k}') with the bridge's requests for another stream's lossless frames \
                 again: rename the stream"
            )));
        }
        if !seen.insert(name) {
            return Err(BridgeError::Usage(format!(
                "stream '{name}' is given twice: give each stream once"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's resend key is a plain key under its own, which no wildcard on the streams'
    /// prefix reaches (a chunk beginning with `@` matches only itself): a subscriber of
    /// `PREFIX/**` gets no answers, and no other stream's key is one (its name would end in
    /// `/@resend`, refused at start).
    #[test]
    fn a_resend_key_is_reached_by_no_wildcard_of_the_streams() {
        use zenoh::key_expr::KeyExpr;
        let rk = resend_key(&key("p", "cam"));
        assert_eq!(rk, "p/cam/@resend");
        let rk = KeyExpr::new(rk).unwrap();
        for w in ["p/**", "p/cam/**", "p/cam/*", "**"] {
            assert!(!KeyExpr::new(w).unwrap().intersects(&rk), "{w}");
        }
        assert!(check_keys("p", &["cam/@resend".into()]).is_err());
        assert!(check_keys("p", &["@resend/cam".into()]).is_ok());
    }
}
