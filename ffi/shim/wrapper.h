/* The DPDK headers rvs binds. Keep this list narrow: bindgen's allowlist in
 * build.rs decides what reaches Rust. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_version.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_vhost.h>
#include <rte_malloc.h>
#include "shim.h"
