/* Entry points of the client runtime for the simulator, which drives a
 * client over an in-memory connection one request at a time instead of
 * letting fedc_client_run() own a socket. */
#ifndef FEDC_CLIENT_INTERNAL_H
#define FEDC_CLIENT_INTERNAL_H

#include "fedc/client.h"
#include "net/conn.h"
#include "proto/wire.h"

/* Writes the Hello a client opens its session with (node_id NULL: the
 * client's own). */
int fedc__client_send_hello(fedc_client *c, fedc__conn *conn, const char *node_id);

/* Reads one message from conn and answers it as fedc_client_run() would:
 * a Welcome is checked, a request is passed to the callbacks and its answer
 * written to conn, a Shutdown sets *done. Errors as fedc_client_run(). */
int fedc__client_serve(fedc_client *c, fedc__conn *conn, int *done);

/* ---- secure aggregation (secagg.c, docs/secagg.md) ---- */

/* The client's state for one round of secure aggregation. */
typedef struct fedc__csa fedc__csa;

/* After fit: quantises the weighted update trained - global (weight
 * min(num_examples, W) / W), creates the protocol client of setup su and
 * returns its ADVERTISE message in *msg (malloc'd). */
int fedc__csa_begin(const Fedc__V1__SecAggSetup *su, uint64_t round, const fedc_params *global,
                    const fedc_params *trained, uint64_t num_examples, fedc__csa **out, uint8_t **msg,
                    size_t *len, char *err, size_t errlen);
/* Answers one of the server's stage messages; *last after the unmask stage. */
int fedc__csa_step(fedc__csa *c, const uint8_t *in, size_t inlen, uint8_t **msg, size_t *len, int *last,
                   char *err, size_t errlen);
uint64_t fedc__csa_round(const fedc__csa *c);
/* Wipes and frees; NULL is a no-op. */
void fedc__csa_destroy(fedc__csa *c);

/* Exchanges the client's secure-aggregation state with *state: the
 * simulator keeps one per virtual client while a worker's client serves
 * many. */
void fedc__client_swap_secagg(fedc_client *c, fedc__csa **state);

#endif
