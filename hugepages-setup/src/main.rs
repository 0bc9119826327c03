//! rvs-hugepages: what hugepages this host has per NUMA node and size,
//! reserving them, and mounting hugetlbfs where DPDK looks (/dev/hugepages).
#![deny(unsafe_code)]
use clap::{Parser, Subcommand};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "rvs-hugepages",
    version,
    about = "Report, reserve and mount hugepages for rvs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hugepages per NUMA node and page size, and hugetlbfs mounts (the default).
    Show,
    /// Reserve PAGES pages of SIZE on every NUMA node (or one) and mount hugetlbfs.
    Reserve {
        /// Pages per NUMA node.
        pages: u64,
        /// Page size: 2M or 1G.
        #[arg(long, default_value = "2M")]
        size: String,
        /// Only this NUMA node.
        #[arg(long)]
        node: Option<u32>,
        /// Where to mount hugetlbfs.
        #[arg(long, default_value = "/dev/hugepages")]
        mount: PathBuf,
    },
}

fn size_kb(s: &str) -> Result<u64, String> {
    match s.to_ascii_uppercase().as_str() {
        "2M" | "2MB" | "2048K" | "2048KB" => Ok(2048),
        "1G" | "1GB" | "1048576K" | "1048576KB" => Ok(1_048_576),
        _ => Err(format!("page size {s:?} is not 2M or 1G")),
    }
}

fn nodes() -> Vec<u32> {
    let mut v: Vec<u32> = fs::read_dir("/sys/devices/system/node")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("node"))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// sysfs directory for a page size on a node, or the global one when the
/// kernel has no NUMA directories.
fn pool_dir(node: Option<u32>, kb: u64) -> PathBuf {
    match node {
        Some(n) => PathBuf::from(format!(
            "/sys/devices/system/node/node{n}/hugepages/hugepages-{kb}kB"
        )),
        None => PathBuf::from(format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB")),
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn mounts() -> Vec<(String, String)> {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[2] == "hugetlbfs").then(|| (f[1].to_string(), f[3].to_string()))
        })
        .collect()
}

fn show() -> Result<(), String> {
    let ns = nodes();
    println!("{:<6} {:<6} {:>8} {:>8}", "node", "size", "total", "free");
    for kb in [2048u64, 1_048_576] {
        let label = if kb == 2048 { "2M" } else { "1G" };
        let targets: Vec<Option<u32>> = if ns.is_empty() {
            vec![None]
        } else {
            ns.iter().map(|n| Some(*n)).collect()
        };
        for n in targets {
            let d = pool_dir(n, kb);
            if !d.exists() {
                continue;
            }
            let total = read_u64(&d.join("nr_hugepages")).unwrap_or(0);
            let free = read_u64(&d.join("free_hugepages")).unwrap_or(0);
            let node = n.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            println!("{node:<6} {label:<6} {total:>8} {free:>8}");
        }
    }
    let m = mounts();
    if m.is_empty() {
        println!("hugetlbfs: not mounted (DPDK needs it: rvs-hugepages reserve N)");
    }
    for (path, opts) in m {
        println!("hugetlbfs: {path} ({opts})");
    }
    Ok(())
}

fn reserve(pages: u64, size: &str, node: Option<u32>, mount: &Path) -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("reserving hugepages needs root (it writes /sys and mounts hugetlbfs): run it with sudo".into());
    }
    let kb = size_kb(size)?;
    let ns = nodes();
    let targets: Vec<Option<u32>> = match node {
        Some(n) if !ns.contains(&n) => {
            return Err(format!("NUMA node {n} does not exist (nodes: {ns:?})"))
        }
        Some(n) => vec![Some(n)],
        None if ns.is_empty() => vec![None],
        None => ns.iter().map(|n| Some(*n)).collect(),
    };
    for n in targets {
        let d = pool_dir(n, kb);
        let f = d.join("nr_hugepages");
        let have = read_u64(&f).ok_or_else(|| {
            format!(
                "{} is missing: this kernel has no {size} hugepages",
                f.display()
            )
        })?;
        if have < pages {
            fs::write(&f, pages.to_string())
                .map_err(|e| format!("cannot write {}: {e}", f.display()))?;
        }
        let got = read_u64(&f).unwrap_or(0);
        let where_ = n
            .map(|x| format!("node {x}"))
            .unwrap_or_else(|| "host".into());
        if got < pages {
            return Err(format!("asked for {pages} {size} pages on {where_}, the kernel gave {got} (memory too fragmented or too small: reserve at boot with hugepages= on the kernel command line)"));
        }
        println!("{where_}: {got} x {size} hugepages reserved");
    }
    let mount_s = mount.to_string_lossy().to_string();
    let want_opt = if kb == 2048 {
        None
    } else {
        Some("pagesize=1G")
    };
    let already = mounts().iter().any(|(p, o)| {
        *p == mount_s && want_opt.is_none_or(|w| o.contains(w) || o.contains("pagesize=1024M"))
    });
    if !already {
        fs::create_dir_all(mount).map_err(|e| format!("cannot create {}: {e}", mount.display()))?;
        let data = want_opt;
        nix::mount::mount(
            Some("hugetlbfs"),
            mount,
            Some("hugetlbfs"),
            nix::mount::MsFlags::empty(),
            data,
        )
        .map_err(|e| format!("cannot mount hugetlbfs on {}: {e}", mount.display()))?;
        println!("hugetlbfs mounted on {}", mount.display());
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd.unwrap_or(Cmd::Show) {
        Cmd::Show => show(),
        Cmd::Reserve {
            pages,
            size,
            node,
            mount,
        } => reserve(pages, &size, node, &mount),
    };
    if let Err(e) = r {
        eprintln!("rvs-hugepages: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_kb("2M"), Ok(2048));
        assert_eq!(size_kb("1g"), Ok(1_048_576));
        assert!(size_kb("4K").unwrap_err().contains("not 2M or 1G"));
    }
}
