#include <rte_config.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include "shim.h"

uint16_t rvs_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t rvs_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

struct rte_mbuf *rvs_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int rvs_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, pkts, n); }

void rvs_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

/* A switch mostly frees bursts of plain mbufs (one segment, direct, not
 * shared, one pool): those go back to the pool's per-lcore cache in one
 * put, without rte_pktmbuf_free_bulk's per-segment walk and pending array
 * (5.5 % of the PMD's samples in an l2 profile). Anything else takes the
 * library's full path. */
void rvs_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned n)
{
	if (n == 0)
		return;
	struct rte_mempool *mp = pkts[0]->pool;
	for (unsigned i = 0; i < n; i++) {
		const struct rte_mbuf *m = pkts[i];
		if (m->pool != mp || m->nb_segs != 1 || m->next != NULL ||
		    rte_mbuf_refcnt_read(m) != 1 || !RTE_MBUF_DIRECT(m)) {
			rte_pktmbuf_free_bulk(pkts, n);
			return;
		}
	}
	rte_mempool_put_bulk(mp, (void **)pkts, n);
}

unsigned rvs_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

unsigned rvs_mempool_in_use_count(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

unsigned rvs_lcore_id(void) { return rte_lcore_id(); }

uint64_t rvs_rdtsc(void) { return rte_rdtsc(); }

int rvs_errno(void) { return rte_errno; }
