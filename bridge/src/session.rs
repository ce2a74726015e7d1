//! Zenoh sessions: where a bridge listens and connects ([`Endpoints`], checked before Zenoh
//! sees them), and the configuration every session opens with, sized so the largest frame
//! reaches the slowest link the bridge is sized for ([`HANDOVER_DEADLINE`]).

use std::time::Duration;

use crate::{BridgeError, codec, without_source_paths, zenoh_err};

/// Where a bridge listens and what it connects to.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Zenoh endpoints to listen on (e.g. `tcp/127.0.0.1:7447`).
    pub listen: Vec<String>,
    /// Zenoh endpoints to connect to (retried until they answer).
    pub connect: Vec<String>,
}

/// The slowest link the bridge is sized for, in bits per second: 1 Gbit/s (1 GbE). Zenoh
/// gives a message one deadline, [`HANDOVER_DEADLINE`], to be handed to the link whole, and
/// that deadline is sized so a frame of [`codec::MAX_FRAME_BYTES`] fits at this speed. On a
/// slower link a frame that takes longer than the deadline to send is not carried: a
/// latest-value one is dropped partway (silently: the put still succeeds, and so does its
/// idle resend), a lossless one makes Zenoh close the connection (an error on stderr; the
/// peers reconnect, and the frame is lost). Frames that such a link sends within the
/// deadline (about 134 MB at 100 Mbit/s) still get through.
pub const MIN_LINK_BITS_PER_SEC: u64 = 1_000_000_000;

/// How long Zenoh may take to hand one message to the link (Zenoh's defaults: 51 ms from a
/// latest-value frame's first fragment, 5 s for a lossless one): the largest message,
/// [`codec::MAX_MESSAGE_BYTES`], at [`MIN_LINK_BITS_PER_SEC`] (8.6 s), and a quarter more
/// for the TCP/IP and Zenoh headers and a link shared with other traffic: about 10.75 s.
/// Set as congestion control *drop*'s fragment deadline and *block*'s close deadline. The
/// costs: a lossless link whose peer stops reading is closed after this long, not 5 s (the
/// put blocks meanwhile, as it would while a large frame goes out); a large latest-value
/// put to a slow subscriber blocks the stream's thread up to this long, not 51 ms, and
/// Zenoh sends to each subscriber in turn from it, so one slow subscriber throttles the
/// others for frames bigger than the send queue, and small streams of the publisher wait
/// behind it under congestion; a stop ([`stop_on_signals`](crate::stop_on_signals)) may
/// take as long. (A peer that stops entirely is cut off by Zenoh's 10 s lease all the
/// same.)
pub const HANDOVER_DEADLINE: Duration =
    Duration::from_micros(codec::MAX_MESSAGE_BYTES * 8 * 1_000_000 / MIN_LINK_BITS_PER_SEC * 5 / 4);

/// Opens a Zenoh peer session: the given endpoints only, multicast scouting off, messages
/// up to [`codec::MAX_MESSAGE_BYTES`] received (the largest frame the bridge carries), and
/// [`HANDOVER_DEADLINE`] to send one. A listen endpoint already in use is a usage error
/// naming it and the remedy for `publish`.
pub fn open_session(e: &Endpoints) -> Result<zenoh::Session, BridgeError> {
    open_session_as(e, Role::Publish)
}

/// The command that opens a session, for the remedy when its listen endpoint is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `publish`: one carries several streams.
    Publish,
    /// `subscribe --listen` (a floor's put or get too): listen elsewhere.
    Subscribe,
}

/// [`open_session`], with the remedy for a listen endpoint in use fit for `role`.
pub(crate) fn open_session_as(e: &Endpoints, role: Role) -> Result<zenoh::Session, BridgeError> {
    use zenoh::Wait;
    zenoh::open(session_config(e)?).wait().map_err(|z| {
        let reason = z.to_string();
        in_use(&e.listen, &reason, role)
            .or_else(|| not_here(&e.listen, &reason))
            .unwrap_or_else(|| zenoh_err("opening the session")(z))
    })
}

/// Of Zenoh's `reason` a session could not be opened, the usage error where it says that a
/// `listen` endpoint is in use (another bridge listening there, e.g. a second `publish` on
/// the default endpoint): the endpoint it names, or all given, the remedy for `role`, and
/// Zenoh's reason without its source paths.
fn in_use(listen: &[String], reason: &str, role: Role) -> Option<BridgeError> {
    let r = reason.to_ascii_lowercase();
    if listen.is_empty() || !(r.contains("address already in use") || r.contains("addrinuse")) {
        return None;
    }
    let named: Vec<&str> = listen
        .iter()
        .map(String::as_str)
        .filter(|l| reason.contains(*l))
        .collect();
    let endpoints = match named.as_slice() {
        [] => listen.join(" "),
        named => named.join(" "),
    };
    // The endpoint's protocol and address, its port to choose.
    let first = named.first().copied().unwrap_or(&listen[0]);
    let other = first
        .split(['?', '#'])
        .next()
        .and_then(|l| l.rsplit_once(':'))
        .map_or("tcp/127.0.0.1".to_owned(), |(host, _)| host.to_owned());
    let join = match role {
        Role::Publish => {
            "if it is a `publish`, give it all the streams (one carries several: \
             `shmstream-bridge publish cam0 dm0`); or "
        }
        Role::Subscribe => "",
    };
    Some(BridgeError::Usage(format!(
        "--listen {endpoints}: address already in use: another bridge (or another program) \
         listens there: {join}listen elsewhere (`--listen {other}:PORT` here and that PORT \
         in the `--connect` of the bridges that connect to it) ({})",
        without_source_paths(reason)
    )))
}

/// Of Zenoh's `reason` a session could not be opened, the usage error where it says that a
/// `listen` endpoint's host cannot be resolved, or is no address of this host: the
/// endpoints given and the remedy, then Zenoh's reason without its source paths.
fn not_here(listen: &[String], reason: &str) -> Option<BridgeError> {
    let r = reason.to_ascii_lowercase();
    let why = if r.contains("failed to lookup address") || r.contains("name or service not known") {
        "its host cannot be resolved here: write a name this host resolves, or an address"
    } else if r.contains("cannot assign requested address") {
        "its host is no address of this host: listen on one of its own addresses"
    } else {
        return None;
    };
    if listen.is_empty() {
        return None;
    }
    Some(BridgeError::Usage(format!(
        "--listen {}: {why} (tcp/0.0.0.0:PORT listens on every address of this host) ({})",
        listen.join(" "),
        without_source_paths(reason)
    )))
}

/// Which flag an endpoint was given with.
#[derive(Clone, Copy, Debug)]
enum EndpointFlag {
    Listen,
    Connect,
}

impl EndpointFlag {
    fn flag(self) -> &'static str {
        match self {
            EndpointFlag::Listen => "--listen",
            EndpointFlag::Connect => "--connect",
        }
    }

    /// The lowest port: 0 (any free port) only to listen on.
    fn lowest_port(self) -> u16 {
        match self {
            EndpointFlag::Listen => 0,
            EndpointFlag::Connect => 1,
        }
    }
}

/// Of an endpoint given with `flag`, the usage error naming it and the remedy, where it is
/// not one `tcp/HOST:PORT` (the one transport this build carries; an IPv6 HOST in brackets;
/// PORT 0, any free port, only to listen on; Zenoh's `?metadata` and `#config` suffixes
/// pass): Zenoh's own refusals are debug dumps.
fn check_endpoint(flag: EndpointFlag, value: &str) -> Result<(), BridgeError> {
    let (lowest, flag) = (flag.lowest_port(), flag.flag());
    // (Said through `say_line`, which escapes what a terminal would obey.)
    let bad = |why: String| Err(BridgeError::Usage(format!("{flag} '{value}' {why}")));
    // Zenoh reads the endpoints as JSON5, which a Rust-escaped control character is not.
    if value.chars().any(char::is_control) {
        return bad("has a control character: write tcp/HOST:PORT".to_owned());
    }
    let bare = value.split(['?', '#']).next().unwrap_or_default();
    let Some((proto, address)) = bare.split_once('/') else {
        let write = match (bare.is_empty(), bare.contains(':')) {
            (true, _) => "HOST:PORT".to_owned(),
            (false, true) => bare.to_owned(),
            (false, false) => format!("{bare}:PORT"),
        };
        return bad(format!("is not an endpoint: write tcp/{write}"));
    };
    if proto != "tcp" {
        return bad(format!(
            "is not an endpoint this build carries: it carries tcp only (write tcp/{address})"
        ));
    }
    if address.contains(',') {
        return bad(format!(
            "is several endpoints: give each its own {flag} tcp/HOST:PORT"
        ));
    }
    let Some((host, port)) = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !address.ends_with(']'))
    else {
        return bad("has no HOST:PORT: write tcp/HOST:PORT".to_owned());
    };
    if host.chars().any(char::is_whitespace) {
        return bad(format!(
            "has whitespace in its host '{host}': write tcp/HOST:PORT"
        ));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if !bracketed && host.contains(':') {
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        return bad(format!(
            "has host '{host}': an IPv6 address goes in brackets: write tcp/[{ip}]:PORT"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p >= lowest => Ok(()),
        Ok(_) => bad(format!(
            "has port 0, which cannot be connected to: write tcp/{host}:PORT, PORT from 1 to 65535"
        )),
        Err(_) => bad(format!(
            "has port '{port}', not a port number: write tcp/{host}:PORT, PORT from {lowest} \
             to 65535"
        )),
    }
}

/// `s` as a JSON (and JSON5) string: quotes and backslashes escaped, every character past
/// ASCII as `\uXXXX` (UTF-16 units), so that Zenoh's parser reads `s` back exactly. Rust's
/// `{:?}` wrote `\u{200b}`, which JSON5 refuses with a dump of its grammar. (Control
/// characters were refused before: [`check_endpoint`].)
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// The configuration [`open_session`] opens.
fn session_config(e: &Endpoints) -> Result<zenoh::Config, BridgeError> {
    for (flag, values) in [
        (EndpointFlag::Listen, &e.listen),
        (EndpointFlag::Connect, &e.connect),
    ] {
        for v in values {
            check_endpoint(flag, v)?;
        }
    }
    let mut c = zenoh::Config::default();
    let json = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| json_string(s))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let settings = [
        ("mode", "\"peer\"".to_owned()),
        ("scouting/multicast/enabled", "false".to_owned()),
        ("listen/endpoints", json(&e.listen)),
        ("connect/endpoints", json(&e.connect)),
        ("connect/timeout_ms", "-1".to_owned()),
        ("connect/exit_on_failure", "false".to_owned()),
        (
            "transport/link/rx/max_message_size",
            codec::MAX_MESSAGE_BYTES.to_string(),
        ),
        // Zenoh gives a fragmented message one deadline from its first fragment (in µs):
        // with the defaults a latest-value frame that cannot be queued within ~51 ms is
        // dropped partway, put() still returning Ok, and a lossless one that cannot within
        // 5 s closes the connection, so a large frame over 1 GbE never arrived live.
        (
            "transport/link/tx/queue/congestion_control/drop/max_wait_before_drop_fragments",
            HANDOVER_DEADLINE.as_micros().to_string(),
        ),
        (
            "transport/link/tx/queue/congestion_control/block/wait_before_close",
            HANDOVER_DEADLINE.as_micros().to_string(),
        ),
    ];
    for (key, value) in settings {
        c.insert_json5(key, &value)
            .map_err(zenoh_err(format!("setting {key} = {value}")))?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `tcp/HOST:PORT` passes (hostnames, IPv6 in brackets, suffixes, port 0 to
    /// listen on); several in one value, whitespace or an unbracketed `:` in the host, and
    /// port 0 to connect to are refused with the remedy.
    #[test]
    fn endpoints_are_checked_before_zenoh_sees_them() {
        for (flag, ok) in [
            (EndpointFlag::Connect, "tcp/localhost:7447"),
            (EndpointFlag::Listen, "tcp/[::]:7447"),
            (EndpointFlag::Connect, "tcp/[::1]:7447"),
            (EndpointFlag::Connect, "tcp/camera-3.lab.example:7447"),
            (EndpointFlag::Listen, "tcp/0.0.0.0:7447"),
            (EndpointFlag::Listen, "tcp/127.0.0.1:0"),
            (EndpointFlag::Listen, "tcp/0.0.0.0:7447#iface=eth0"),
            (EndpointFlag::Connect, "tcp/10.0.0.2:7447?prio=1-7"),
        ] {
            assert!(check_endpoint(flag, ok).is_ok(), "{flag:?} {ok}");
        }
        for (flag, bad, says) in [
            (
                EndpointFlag::Connect,
                "",
                "is not an endpoint: write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Listen,
                "0.0.0.0",
                "is not an endpoint: write tcp/0.0.0.0:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/a:1,tcp/b:2",
                "is several endpoints: give each its own --connect tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Listen,
                "tcp/::1:7447",
                "has host '::1': an IPv6 address goes in brackets: write tcp/[::1]:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/[::1:7447",
                "has host '[::1': an IPv6 address goes in brackets: write tcp/[::1]:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/:7447",
                "has no HOST:PORT: write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Listen,
                "tcp/[::1]",
                "has no HOST:PORT: write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/ho st:1",
                "has whitespace in its host 'ho st': write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/h:0",
                "has port 0, which cannot be connected to: write tcp/h:PORT, PORT from 1 to 65535",
            ),
            (
                EndpointFlag::Connect,
                "tcp/h:x",
                "has port 'x', not a port number: write tcp/h:PORT, PORT from 1 to 65535",
            ),
            (
                EndpointFlag::Listen,
                "tcp/h:x",
                "has port 'x', not a port number: write tcp/h:PORT, PORT from 0 to 65535",
            ),
            // Zenoh's JSON5 parser refused these with a dump of its grammar.
            (
                EndpointFlag::Listen,
                "tcp/h\u{1}:7447",
                "has a control character: write tcp/HOST:PORT",
            ),
            (
                EndpointFlag::Connect,
                "tcp/h:7447\u{7f}",
                "has a control character: write tcp/HOST:PORT",
            ),
        ] {
            match check_endpoint(flag, bad) {
                Err(BridgeError::Usage(u)) => {
                    assert_eq!(u, format!("{} '{bad}' {says}", flag.flag()))
                }
                other => panic!("{flag:?} {bad}: {other:?}"),
            }
        }
    }

    /// A listen endpoint in use is a usage error: its remedy fits the role (a `subscribe
    /// --listen` is not told to give its streams to a `publish`), Zenoh's reason last,
    /// without its source paths.
    #[test]
    fn a_listen_endpoint_in_use_says_the_remedy_for_the_role() {
        let ep = "tcp/127.0.0.1:40079";
        let reason = "Can not create a new TCP listener bound to tcp/127.0.0.1:40079: \
            [127.0.0.1:40079: Address already in use (os error 98) at /root/.cargo/registry/\
            src/zenoh-link-commons-1.10.2/src/tcp.rs:61.] at /root/.cargo/registry/src/\
            zenoh-link-tcp-1.10.2/src/unicast.rs:338.";
        let listen = [ep.to_owned()];
        let said = |role| match in_use(&listen, reason, role) {
            Some(BridgeError::Usage(u)) => u,
            other => panic!("{other:?}"),
        };
        let zenoh = "(Can not create a new TCP listener bound to tcp/127.0.0.1:40079: \
            [127.0.0.1:40079: Address already in use (os error 98)])";
        for role in [Role::Publish, Role::Subscribe] {
            let u = said(role);
            assert!(
                u.starts_with(&format!("--listen {ep}: address already in use"))
                    && u.contains("listen elsewhere (`--listen tcp/127.0.0.1:PORT` here")
                    && u.ends_with(zenoh)
                    && !u.contains(".rs:"),
                "{role:?}: {u}"
            );
            assert_eq!(
                u.contains("`publish`"),
                role == Role::Publish,
                "{role:?}: {u}"
            );
        }
        assert!(in_use(&listen, "connection refused", Role::Subscribe).is_none());
    }

    /// An endpoint reaches Zenoh's configuration as it was given: quotes, backslashes and
    /// characters past ASCII (a zero-width space, which passed the checks and which Rust's
    /// `{:?}` wrote as `\u{200b}`, no JSON5) read back exactly.
    #[test]
    fn endpoints_reach_zenohs_configuration_exactly() {
        for s in [
            "tcp/h:7447",
            "tcp/h\u{200b}:7447",
            "tcp/café\u{1f600}\"\\:1",
            "tcp/[::1]:0",
        ] {
            let j = json_string(s);
            assert!(j.is_ascii(), "{j}");
            // Printable ASCII as it is: the configuration reads as given.
            if s == "tcp/h:7447" {
                assert_eq!(j, "\"tcp/h:7447\"");
            }
            assert_eq!(serde_json::from_str::<String>(&j).unwrap(), s, "{j}");
        }
        let e = Endpoints {
            listen: vec!["tcp/h\u{200b}:7447".to_owned()],
            ..Endpoints::default()
        };
        let c = session_config(&e).unwrap();
        let got: Vec<String> =
            serde_json::from_str(&c.get_json("listen/endpoints").unwrap()).unwrap();
        assert_eq!(got, e.listen);
    }

    /// A listen endpoint whose host does not resolve, or is not this host's, is a usage error
    /// naming it and the remedy ("zenoh: opening the session: failed to lookup address
    /// information" named neither); other reasons are Zenoh's own.
    #[test]
    fn a_listen_host_that_does_not_resolve_or_is_not_this_hosts_says_the_remedy() {
        let listen = ["tcp/nosuchhost.invalid:7447".to_owned()];
        let said = |reason: &str| match not_here(&listen, reason) {
            Some(BridgeError::Usage(u)) => u,
            other => panic!("{reason}: {other:?}"),
        };
        let u = said(
            "failed to lookup address information: Name or service not known at \
             /root/.cargo/registry/src/zenoh-link-tcp-1.10.2/src/lib.rs:88.",
        );
        assert!(
            u.starts_with("--listen tcp/nosuchhost.invalid:7447: its host cannot be resolved here")
                && u.contains("tcp/0.0.0.0:PORT")
                && u.contains("(failed to lookup address information: Name or service not known")
                && !u.contains(".rs:"),
            "{u}"
        );
        // glibc's words alone, as a resolver may give them.
        let u = said("Name or service not known");
        assert!(u.contains("its host cannot be resolved here"), "{u}");
        let u = said("Cannot assign requested address (os error 99)");
        assert!(u.contains("its host is no address of this host"), "{u}");
        assert!(not_here(&listen, "Address already in use (os error 98)").is_none());
        assert!(not_here(&[], "failed to lookup address information").is_none());
    }

    /// Zenoh's default (1 GiB) would drop a message of the largest frame the codec accepts,
    /// silently: the session takes what the codec allows, its attachment and headers.
    #[test]
    fn a_session_receives_messages_of_the_largest_frame_the_codec_accepts() {
        let c = session_config(&Endpoints::default()).unwrap();
        let max: u64 = c
            .get_json("transport/link/rx/max_message_size")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(max, codec::MAX_MESSAGE_BYTES);
        assert!(max > codec::MAX_FRAME_BYTES);
    }

    /// Zenoh's defaults give a message 51 ms (latest value) or 5 s (lossless) to be handed
    /// to the link whole, after which it is dropped partway (silently) or the connection is
    /// closed: the session gives it long enough for the largest frame at the slowest link
    /// speed the bridge is sized for.
    #[test]
    fn a_session_gives_the_largest_frame_time_to_go_out_at_the_slowest_link_it_is_sized_for() {
        let c = session_config(&Endpoints::default()).unwrap();
        let us = |key: &str| -> u64 {
            let key = format!("transport/link/tx/queue/congestion_control/{key}");
            c.get_json(&key).unwrap().parse().unwrap()
        };
        let needed = codec::MAX_MESSAGE_BYTES * 8 * 1_000_000 / MIN_LINK_BITS_PER_SEC;
        assert!(needed >= 8_000_000, "1 GiB at 1 Gbit/s: {needed} µs");
        // Drop: the first batch's wait, then a budget shared by the following fragments.
        let drop = us("drop/wait_before_drop") + us("drop/max_wait_before_drop_fragments");
        assert!(drop >= needed, "drop deadline {drop} µs < {needed} µs");
        // Block: one deadline for the whole message.
        let block = us("block/wait_before_close");
        assert!(block >= needed, "block deadline {block} µs < {needed} µs");
        // A quarter more, not longer: a lossless link whose peer stops reading closes then.
        assert_eq!(
            HANDOVER_DEADLINE.as_millis(),
            10_747,
            "8.6 s and a quarter more"
        );
        assert!(block <= needed * 5 / 4, "block deadline {block} µs");
    }
}
