/* Entry points of the client runtime for the simulator, which drives a
 * client over an in-memory connection one request at a time instead of
 * letting fedc_client_run() own a socket. */
#ifndef FEDC_CLIENT_INTERNAL_H
#define FEDC_CLIENT_INTERNAL_H

#include "fedc/client.h"
#include "net/conn.h"

/* Writes the Hello a client opens its session with (node_id NULL: the
 * client's own). */
int fedc__client_send_hello(fedc_client *c, fedc__conn *conn, const char *node_id);

/* Reads one message from conn and answers it as fedc_client_run() would:
 * a Welcome is checked, a request is passed to the callbacks and its answer
 * written to conn, a Shutdown sets *done. Errors as fedc_client_run(). */
int fedc__client_serve(fedc_client *c, fedc__conn *conn, int *done);

#endif
