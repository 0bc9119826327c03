//! Generates DPDK bindings with bindgen and compiles the C shim against the
//! system DPDK found through pkg-config. DPDK's cflags carry
//! `-include rte_config.h -march=...`: both bindgen and cc get them.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/wrapper.h");

    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "DPDK 22.11 not found through pkg-config ({e}).\n\
                 Install it with: bash ci/setup.sh (Debian packages libdpdk-dev dpdk pkg-config)"
            )
        });
    // pkg-config's probe splits include paths from other flags; keep the
    // non-include flags (-include rte_config.h, -march=...) for bindgen and cc.
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config --cflags libdpdk");
    let raw = String::from_utf8_lossy(&raw.stdout).to_string();
    let mut extra: Vec<String> = Vec::new();
    let mut it = raw.split_whitespace().peekable();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                extra.push("-include".into());
                extra.push(h.into());
            }
        } else if f.starts_with("-m") {
            extra.push(f.into());
        }
    }

    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(3).warnings(false);
    for p in &dpdk.include_paths {
        build.include(p);
    }
    for f in &extra {
        build.flag(f);
    }
    build.compile("rvs_shim");

    let mut bg = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(
            dpdk.include_paths
                .iter()
                .map(|p| format!("-I{}", p.display())),
        )
        .clang_args(extra.iter().cloned())
        .clang_arg("-Ishim")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        // Packed protocol structs (rte_l2tpv2_*, rte_gtp_*) break derives: keep
        // the allowlist to what rvs calls and let bindgen pull in what those need.
        .allowlist_function("rvs_.*")
        .allowlist_function("rte_eal_(init|cleanup|has_hugepages|process_type)")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_version")
        .allowlist_function("rte_socket_(id|count)")
        .allowlist_function("rte_lcore_(count|to_socket_id)")
        .allowlist_function("rte_thread_(register|unregister)")
        .allowlist_function("rte_get_tsc_hz")
        .allowlist_function("rte_pktmbuf_(pool_create|copy)")
        .allowlist_function("rte_mempool_(free|lookup)")
        .allowlist_function("rte_eth_(dev_configure|dev_start|dev_stop|dev_close|rx_queue_setup|tx_queue_setup|dev_info_get|dev_socket_id|stats_get|stats_reset|link_get_nowait|macaddr_get|dev_get_port_by_name|dev_set_mtu|dev_get_mtu|promiscuous_enable|dev_count_avail|dev_is_valid_port|dev_set_link_up|dev_set_link_down)")
        .allowlist_function("rte_dev_(probe|remove)")
        .allowlist_function("rte_eal_hotplug_(add|remove)")
        .allowlist_function("rte_vhost_(driver_register|driver_unregister|driver_callback_register|driver_start|driver_disable_features|driver_set_features|driver_get_features|driver_get_queue_num|get_ifname|enqueue_burst|dequeue_burst|get_negotiated_features|get_vring_num|get_numa_node|get_mtu|get_vhost_vring|get_mem_table|get_vring_base|set_vring_base|extern_callback_register|enable_guest_notification)")
        .allowlist_type("rte_vhost_device_ops|rte_vhost_user_extern_ops|rte_vhost_vring|rte_vhost_memory|rte_vhost_msg_result")
        .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_eth_link|rte_ether_addr|rte_eth_rxconf|rte_eth_txconf")
        .allowlist_var("RTE_VHOST_USER_.*|RTE_ETH_.*|RTE_MBUF_DEFAULT_.*|RTE_PKTMBUF_HEADROOM|RTE_MAX_ETHPORTS|SOCKET_ID_ANY|LCORE_ID_ANY|RTE_VERSION.*")
        .opaque_type("rte_l2tpv2_.*|rte_gtp_.*")
        .blocklist_type("max_align_t");
    if env::var("DOCS_RS").is_ok() {
        bg = bg.clang_arg("-DDOCS");
    }
    let bindings = bg.generate().expect("bindgen over DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");
}
