/* trainer/train_step.c: one optimizer step of a run (see run.h). Everything it touches was
 * allocated before the first step: the token buffer, the model's activations and gradients,
 * the gradient sum's buffers (par_grads_prepare). */
#include <math.h>
#include "draw.h"
#include "inputs.h"
#include "optim.h"
#include "parallel.h"
#include "run.h"
#include "runtime.h"

int train_step(Run *r, int signal_seen, StepResult *res) {
    const Options *o = &r->o;
    const int B = o->batch, T = o->seq_len, A = o->accum, R = par_size();
    const long s = (long)r->st.step;
    char err[ERR_MAX];
    const double t0 = now_s();
    /* the whole step's R x A micro-batches are drawn (the one stream), this rank's A kept */
    data_draw_step(r->sp.train, r->sp.n_train, A, B, T, par_rank(), R, &r->st.data_rng, r->tokens);
    double loss = model_accumulate(r->m, r->tokens, A * B, B, T, R * A);
    res->signal = 0;
    if (par_summing()) {
        /* the loss summed over the ranks with their signals (every rank stops at the same
           step), then the gradients, in a fixed order: the same bits on every rank */
        res->signal = signal_seen;
        par_step_scalars(&loss, &res->signal);
        if (isfinite(loss) && par_allreduce_grads(r->m, err, sizeof err)) die("error: %s", err);
    }
    /* a non-finite loss stops before the update; a non-finite gradient norm stops
       without one (model_update leaves everything as it was) */
    res->loss = loss;
    res->lr = lr_at(&o->opt, s);
    res->gnorm = NAN;
    if (isfinite(loss)) res->gnorm = model_update(r->m, &o->opt, s + 1, res->lr);
    if (!isfinite(loss) || !isfinite(res->gnorm)) return -1;
    r->st.step++;
    r->st.tokens += (uint64_t)R * A * B * T;   /* the global step */
    res->seconds = now_s() - t0;
    return 0;
}
