//! The cores a scenario's keys pin to, and the warnings for those no process can be pinned
//! to here (what the harness places there runs unpinned).

use super::Scenario;

/// `cores` (ascending) as ranges: "0-3, 6, 8-9".
fn core_list(cores: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &c in cores {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => runs.push((c, c)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Scenario {
    /// What the run says (on stderr and in the report's Pinning row) of core keys naming a
    /// core no process can be pinned to here ([`Placement::pinnable_cores`], tried, not read
    /// from this process's affinity mask: under `taskset` or `isolcpus` a child pins itself
    /// outside that mask wherever the cpuset allows): what the harness places there runs
    /// unpinned. Not a refusal: a 1-core VM or a cpuset still runs every scenario (and
    /// `harness size`, which has no core flags), and says so; a busy-waiting ao-loop job
    /// placed there is skipped ([`Placement::skip_reason`]).
    ///
    /// [`Placement::pinnable_cores`]: crate::cases::ao::placement::Placement::pinnable_cores
    /// [`Placement::skip_reason`]: crate::cases::ao::placement::Placement::skip_reason
    pub fn core_warnings(&self) -> Vec<String> {
        let keys: Vec<usize> = self.core_keys().into_iter().map(|(.., c)| c).collect();
        let own = crate::spawn::allowed_cores();
        crate::cases::ao::placement::Placement::pinnable_cores(&keys)
            .map_or_else(Vec::new, |cores| self.cores_outside(&cores, own.as_deref()))
    }

    /// The cores the scenario's keys pin to ([`Self::core_keys`]), ascending, each once.
    pub fn pinned_cores(&self) -> Vec<usize> {
        let mut cores: Vec<usize> = self.core_keys().into_iter().map(|(.., c)| c).collect();
        cores.sort_unstable();
        cores.dedup();
        cores
    }

    /// The core keys the scenario sets (`writer_cpu`, `reader_cpu`, an ao-loop stage's
    /// `*_cpu`): (table, key, core).
    fn core_keys(&self) -> Vec<(String, &'static str, usize)> {
        let mut out = vec![
            ("[defaults]".into(), "writer_cpu", self.defaults.writer_cpu),
            ("[defaults]".into(), "reader_cpu", self.defaults.reader_cpu),
        ];
        for (i, c) in self.cases.iter().enumerate() {
            let Some(ao) = &c.ao else { continue };
            let table = format!("[[case]] #{} ({}) [case.ao]", i + 1, c.resolved_name());
            for (key, cpu) in [
                ("camera_cpu", ao.camera_cpu),
                ("slopes_cpu", ao.slopes_cpu),
                ("recon_cpu", ao.recon_cpu),
            ] {
                if let Some(cpu) = cpu {
                    out.push((table.clone(), key, cpu));
                }
            }
        }
        out
    }

    /// The core keys naming a core outside `pinnable` (the cores a process can be pinned to
    /// here), each as a line naming the key and the core, and `own` (this process's
    /// affinity mask, cores it can certainly be pinned to; `None`: unknown) as examples.
    fn cores_outside(&self, pinnable: &[usize], own: Option<&[usize]>) -> Vec<String> {
        let such = own.filter(|c| !c.is_empty()).map_or(String::new(), |c| {
            format!(" (such as this process's own cores, {})", core_list(c))
        });
        self.core_keys()
            .into_iter()
            .filter(|(.., cpu)| !pinnable.contains(cpu))
            .map(|(table, key, cpu)| {
                format!(
                    "{table} {key} = {cpu}: no process can be pinned to core {cpu} here (a \
                     core this machine lacks or its cpuset leaves out), so what the harness \
                     places there runs unpinned; set {key} to a core it can be pinned to{such}"
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core key naming a core no process can be pinned to here is warned of, naming the
    /// key and the core (its children would run unpinned while the report said otherwise),
    /// and still parses: a 1-core VM or a cpuset runs every scenario. Both default keys name
    /// a far core, so the machine decides nothing; the rest on an injected pinnable set.
    #[test]
    fn a_core_no_process_can_be_pinned_to_is_warned_of_naming_the_key_and_the_core() {
        let far = Scenario::parse(
            "name=\"x\"\n[defaults]\nwriter_cpu = 1023\nreader_cpu = 1023\n[[case]]\n\
             kind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap();
        let warned = far.core_warnings();
        assert_eq!(warned.len(), 2, "{warned:?}");
        for (line, key) in warned.iter().zip(["writer_cpu", "reader_cpu"]) {
            assert!(
                line.starts_with(&format!(
                    "[defaults] {key} = 1023: no process can be pinned to core 1023 here"
                )) && line.contains(&format!("set {key} to a core it can be pinned to")),
                "{warned:?}"
            );
        }
        let two = [0, 1];
        let sut = Scenario::parse(
            "name=\"x\"\n[defaults]\nreader_cpu = 7\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n",
        )
        .unwrap();
        assert_eq!(
            sut.cores_outside(&two, Some(&two)),
            vec![
                "[defaults] reader_cpu = 7: no process can be pinned to core 7 here (a core this \
                 machine lacks or its cpuset leaves out), so what the harness places there runs \
                 unpinned; set reader_cpu to a core it can be pinned to (such as this process's \
                 own cores, 0-1)"
                    .to_owned()
            ]
        );
        assert!(sut.cores_outside(&two, None)[0].ends_with("to a core it can be pinned to"));
        assert!(sut.cores_outside(&[0, 7], None).is_empty());
        for key in ["camera_cpu", "slopes_cpu", "recon_cpu"] {
            let sut = Scenario::parse(&format!(
                "name=\"x\"\n[[case]]\nkind=\"roundtrip\"\nsizes=[[2]]\n[[case]]\n\
                 kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
                 actuators=5\nrate_hz=1000\n{key} = 2\n"
            ))
            .unwrap();
            let warned = sut.cores_outside(&two, None);
            assert!(
                warned.len() == 1
                    && warned[0].starts_with(&format!(
                        "[[case]] #2 (ao-loop) [case.ao] {key} = 2: no process can be pinned to \
                         core 2 here"
                    )),
                "{warned:?}"
            );
            assert!(sut.cores_outside(&[0, 1, 2], None).is_empty());
        }
        assert_eq!(core_list(&[0, 1, 2, 3, 6, 8, 9]), "0-3, 6, 8-9");
    }

    /// The cores a scenario pins to are those its core keys name, ascending, each once.
    #[test]
    fn the_pinned_cores_are_those_the_keys_name_ascending_each_once() {
        let sut = Scenario::parse(
            "name=\"x\"\n[defaults]\nwriter_cpu = 3\nreader_cpu = 1\n[[case]]\n\
             kind=\"ao-loop\"\nsizes=[[8, 8]]\n[case.ao]\nsubapertures=[2, 2]\n\
             actuators=5\nrate_hz=1000\ncamera_cpu = 3\nslopes_cpu = 2\n",
        )
        .unwrap();
        assert_eq!(sut.pinned_cores(), [1, 2, 3]);
    }

    /// The warning follows where a process can be pinned, not this process's affinity mask:
    /// from a thread whose mask is one core (as under `taskset -c`, or a stage already
    /// pinned), a core key naming another core of the machine is not warned of, since a
    /// child pins itself there all the same. Needs two cores this process may run on.
    #[test]
    fn a_core_outside_the_affinity_mask_but_pinnable_is_not_warned_of() {
        let cores = crate::spawn::allowed_cores().unwrap();
        let [mine, other, ..] = cores[..] else {
            eprintln!("one core: nothing outside the mask to pin to");
            return;
        };
        let sut = Scenario::parse(&format!(
            "name=\"x\"\n[defaults]\nwriter_cpu = {mine}\nreader_cpu = {other}\n[[case]]\n\
             kind=\"roundtrip\"\nsizes=[[2]]\n"
        ))
        .unwrap();
        let (mask, warned) = std::thread::spawn(move || {
            assert!(crate::spawn::pin_to(mine));
            (crate::spawn::allowed_cores().unwrap(), sut.core_warnings())
        })
        .join()
        .unwrap();
        assert_eq!(mask, [mine]);
        assert!(warned.is_empty(), "{warned:?}");
    }
}
