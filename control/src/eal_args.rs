//! EAL arguments and PMD cores from Open_vSwitch other_config, the way
//! ovs-vswitchd reads dpdk-lcore-mask, dpdk-socket-mem, dpdk-extra and
//! pmd-cpu-mask; plus the host facts they depend on (CPUs, NUMA, hugepages).
use crate::config::GlobalConf;

pub fn parse_mask(s: &str, what: &str) -> Result<u64, String> {
    let t = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    let m = u64::from_str_radix(t, 16)
        .map_err(|_| format!("other_config:{what}={s:?} is not a hexadecimal CPU mask"))?;
    if m == 0 {
        return Err(format!("other_config:{what}={s:?} selects no CPU"));
    }
    Ok(m)
}

pub fn mask_cpus(m: u64) -> Vec<usize> {
    (0..64).filter(|i| m & (1 << i) != 0).collect()
}

/// CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => vec![0],
    }
}

pub fn numa_of_cpu(cpu: usize) -> i32 {
    let dir = format!("/sys/devices/system/cpu/cpu{cpu}");
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = n.strip_prefix("node").and_then(|x| x.parse().ok()) {
                return id;
            }
        }
    }
    0
}

/// Hugepages free and mounted (hugetlbfs) on this host.
pub fn hugepages_available() -> (u64, bool) {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    (free, mounted)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub eal_args: Vec<String>,
    /// (core, NUMA node) per PMD.
    pub pmds: Vec<(usize, i32)>,
    pub no_huge: bool,
    /// Packet-buffer pool size per NUMA node.
    pub pool_mbufs: u32,
    pub warnings: Vec<String>,
}

/// Bytes of memory one pool mbuf takes (2 KiB data room, headroom, header,
/// mempool object overhead), for budgeting.
pub const MBUF_BYTES: u64 = 2048 + 128 + 128 + 64;

pub fn plan(
    g: &GlobalConf,
    file_prefix: &str,
    allowed: &[usize],
    hugepages: (u64, bool),
) -> Result<Plan, String> {
    let mut warnings = Vec::new();
    let pmd_cpus = match g.get("pmd-cpu-mask") {
        Some(m) => {
            let cpus = mask_cpus(parse_mask(m, "pmd-cpu-mask")?);
            if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(format!("other_config:pmd-cpu-mask={m} names CPU {c}, which rvsd may not run on (allowed: {allowed:?})"));
            }
            cpus
        }
        // One PMD on the last allowed CPU, leaving the first for control
        // threads (and, on a 2-core host, a traffic generator or VM).
        None => vec![*allowed.last().unwrap_or(&0)],
    };
    let main_lcore = match g.get("dpdk-lcore-mask") {
        Some(m) => mask_cpus(parse_mask(m, "dpdk-lcore-mask")?)[0],
        None => allowed
            .iter()
            .copied()
            .find(|c| !pmd_cpus.contains(c))
            .unwrap_or(allowed[0]),
    };
    let mut args = vec![
        "--file-prefix".to_string(),
        file_prefix.to_string(),
        "-l".to_string(),
        main_lcore.to_string(),
    ];
    let (free, mounted) = hugepages;
    let no_huge = free == 0 || !mounted;
    let socket_mem_mb: u64;
    if no_huge {
        warnings.push(format!(
            "no hugepages available ({free} free, hugetlbfs {}): running with --no-huge; rvsd is slower and its memory cannot be shared, reserve hugepages with `rvs-hugepages reserve` for real use",
            if mounted { "mounted" } else { "not mounted" }
        ));
        socket_mem_mb = 512;
        args.extend(["--no-huge".into(), "-m".into(), socket_mem_mb.to_string()]);
    } else {
        let sm = g.get("dpdk-socket-mem").unwrap_or("512");
        socket_mem_mb = sm.split(',').next().and_then(|v| v.trim().parse().ok()).ok_or_else(|| format!("other_config:dpdk-socket-mem={sm:?} is not a comma-separated list of MB per NUMA node"))?;
        args.extend(["--socket-mem".into(), sm.to_string()]);
        // rvsd never shares its own memory (it is the vhost-user back end
        // and has no secondary processes): unlinked hugepage files cannot
        // outlive it, even after SIGKILL.
        args.push("--huge-unlink".into());
        if let Some(l) = g.get("dpdk-socket-limit") {
            args.extend(["--socket-limit".into(), l.to_string()]);
        }
    }
    if let Some(extra) = g.get("dpdk-extra") {
        args.extend(extra.split_whitespace().map(String::from));
    }
    // Three quarters of the memory for packet buffers, the rest for rings
    // and DPDK's own structures; at most 2^17-1 mbufs per pool.
    let pool_mbufs = ((socket_mem_mb << 20) * 3 / 4 / MBUF_BYTES).clamp(4095, 131071) as u32;
    let pmds = pmd_cpus.iter().map(|&c| (c, numa_of_cpu(c))).collect();
    Ok(Plan {
        eal_args: args,
        pmds,
        no_huge,
        pool_mbufs,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(kv: &[(&str, &str)]) -> GlobalConf {
        GlobalConf {
            next_cfg: 0,
            other_config: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn defaults_put_pmd_on_last_cpu_and_main_on_first() {
        let p = plan(&g(&[]), "rvs", &[0, 1], (512, true)).unwrap();
        assert_eq!(p.pmds.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(&p.eal_args[..4], &["--file-prefix", "rvs", "-l", "0"]);
        assert!(p.eal_args.contains(&"--socket-mem".to_string()));
        assert!(!p.no_huge);
    }

    #[test]
    fn reads_ovs_keys() {
        let p = plan(
            &g(&[
                ("pmd-cpu-mask", "0x2"),
                ("dpdk-lcore-mask", "0x1"),
                ("dpdk-socket-mem", "1024"),
                ("dpdk-extra", "--log-level=8 -a 0000:00:01.0"),
            ]),
            "x",
            &[0, 1],
            (512, true),
        )
        .unwrap();
        assert_eq!(p.pmds[0].0, 1);
        assert!(p.eal_args.ends_with(&[
            "--log-level=8".into(),
            "-a".into(),
            "0000:00:01.0".into()
        ]));
        assert_eq!(
            p.pool_mbufs,
            131071.min(((1024u64 << 20) * 3 / 4 / MBUF_BYTES) as u32)
        );
    }

    #[test]
    fn no_hugepages_falls_back_with_a_warning() {
        let p = plan(&g(&[]), "rvs", &[0, 1], (0, false)).unwrap();
        assert!(p.no_huge);
        assert!(p.eal_args.contains(&"--no-huge".to_string()));
        assert!(p.warnings[0].contains("no hugepages"));
    }

    #[test]
    fn bad_masks_say_what_to_fix() {
        assert!(plan(&g(&[("pmd-cpu-mask", "zz")]), "r", &[0, 1], (1, true))
            .unwrap_err()
            .contains("pmd-cpu-mask=\"zz\" is not a hexadecimal"));
        assert!(
            plan(&g(&[("pmd-cpu-mask", "0x8")]), "r", &[0, 1], (1, true))
                .unwrap_err()
                .contains("CPU 3")
        );
        assert!(
            plan(&g(&[("dpdk-socket-mem", "lots")]), "r", &[0, 1], (1, true))
                .unwrap_err()
                .contains("dpdk-socket-mem")
        );
    }
}
