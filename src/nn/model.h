/*
 * Internal entry points of the nn model, for the unit tests: the gradient of
 * the loss without an optimizer step, access to the gradient buffers and the
 * backend, and a way to compute on a backend of the test's own.
 */
#ifndef FEDC_NN_MODEL_H
#define FEDC_NN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/nn.h"
#include "nn/backend.h"

/* Largest number of examples that go through the layers at once. A larger
 * minibatch is processed in chunks whose gradients are summed, so that the
 * working memory stays bounded whatever batch size a caller asks for. */
#define FEDC__NN_MAX_CHUNK 256

/* Computes the mean cross-entropy of nb examples (host x and y, laid out as
 * for fedc_model_train) into *loss and its gradient with respect to every
 * parameter into the buffers returned by fedc__nn_model_grad(); the
 * parameters are not changed. Inputs are not validated. */
int fedc__nn_model_loss_grad(fedc_model *m, const float *x, const int32_t *y, size_t nb, double *loss,
                             char *err, size_t errlen);

/* Gradient buffer of the i-th tensor of fedc_model_params() (device memory;
 * host memory on the CPU backend), or NULL when i is out of range. */
float *fedc__nn_model_grad(fedc_model *m, size_t i);

/* The backend the model computes on (its memory holds the gradients). */
const fedc__nn_backend *fedc__nn_model_backend(const fedc_model *m);

/* Moves the model onto `be`, a backend the caller keeps alive while the
 * model uses it (the tests' stand-in devices); the model then reports the
 * CPU as its device, and fedc_model_set_device() to the CPU moves it back to
 * the CPU backend. Errors as for fedc_model_set_device(). */
int fedc__nn_model_set_backend(fedc_model *m, const fedc__nn_backend *be, char *err, size_t errlen);

#endif /* FEDC_NN_MODEL_H */
