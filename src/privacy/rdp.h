/* Inside the privacy layer: the step every mechanism's accountant shares,
 * from the RDP of a mechanism to (epsilon, delta). */
#ifndef FEDC_PRIVACY_RDP_H
#define FEDC_PRIVACY_RDP_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

/* The RDP of `steps` compositions of one mechanism, whose parameters are at
 * `mech`, at each of the n orders, into rdp[0 .. n-1] (as
 * fedc_rdp_sampled_gaussian and fedc__ddg_rdp, which check their own
 * arguments and the orders). */
typedef int (*fedc__rdp_fn)(const void *mech, uint64_t steps, const double *orders, size_t n, double *rdp,
                            char *err, size_t errlen);

/* epsilon at delta after `steps` compositions of the mechanism: its RDP by
 * rdp_of over `orders` (NULL: fedc_rdp_default_orders, n is then ignored),
 * converted by fedc_rdp_epsilon, with the order that gave it (either output
 * may be NULL). delta and the number of orders are checked before rdp_of
 * runs. */
int fedc__rdp_mechanism_epsilon(fedc__rdp_fn rdp_of, const void *mech, uint64_t steps, double delta,
                                const double *orders, size_t n, double *epsilon, double *order, char *err,
                                size_t errlen);

#endif
