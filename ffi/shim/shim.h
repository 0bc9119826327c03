#ifndef RVS_SHIM_H
#define RVS_SHIM_H
/* Out-of-line wrappers for DPDK's static inline fast-path functions, which
 * bindgen cannot bind. One call per burst, never per packet. */
#include <stdint.h>
struct rte_mbuf;
struct rte_mempool;

uint16_t rvs_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t rvs_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *rvs_pktmbuf_alloc(struct rte_mempool *mp);
int rvs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
void rvs_pktmbuf_free(struct rte_mbuf *m);
void rvs_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned n);
unsigned rvs_mempool_avail_count(const struct rte_mempool *mp);
unsigned rvs_mempool_in_use_count(const struct rte_mempool *mp);
unsigned rvs_lcore_id(void);
uint64_t rvs_rdtsc(void);
int rvs_errno(void);
#endif
