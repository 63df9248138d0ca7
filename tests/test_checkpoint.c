/* tests/test_checkpoint.c: the checkpoint format on its own: an exact round trip of
 * settings, state, parameters and both Adam moments; and a well-formed file (valid
 * checksum) whose settings describe another model than its parameter block is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint.h"
#include "test.h"

static FlashConfig small(int dim) {
    FlashConfig c = config_default();
    c.dim = dim; c.depth = 2; c.group_size = 8; c.query_key_dim = 16;
    return c;
}

static void test_round_trip(void) {
    Options o;
    options_default(&o);
    o.model = small(32);
    o.seed = 99;
    o.opt.peak_lr = 1.25e-3;
    Model m;
    char err[512];
    CHECK(!model_create(&m, &o.model, err, sizeof err), "%s", err);
    model_init_params(&m, 5);
    real *am = malloc(sizeof(real) * m.table.total), *av = malloc(sizeof(real) * m.table.total);
    for (size_t k = 0; k < m.table.total; k++) { am[k] = (real)k * 1e-3f; av[k] = (real)k * 1e-6f; }
    TrainState st = {.step = 1234, .tokens = 5678, .elapsed_s = 9.5};
    rng_seed(&st.data_rng, 1);
    rng_seed(&st.sample_rng, 2);
    const char *path = "/tmp/flash_test_ckpt.bin";
    CHECK(!checkpoint_save(path, &o, &st, &m, am, av, err, sizeof err), "%s", err);

    Options o2;
    TrainState st2;
    Model m2;
    real *am2 = NULL, *av2 = NULL;
    CHECK(!checkpoint_load(path, &o2, &st2, &m2, &am2, &av2, err, sizeof err), "%s", err);
    CHECK(o2.model.dim == 32 && o2.seed == 99 && o2.opt.peak_lr == 1.25e-3, "settings differ");
    CHECK(st2.step == 1234 && st2.tokens == 5678 && st2.elapsed_s == 9.5, "state differs");
    CHECK(!memcmp(&st2.data_rng, &st.data_rng, sizeof st.data_rng) &&
          !memcmp(&st2.sample_rng, &st.sample_rng, sizeof st.sample_rng), "generator states differ");
    CHECK(m2.table.total == m.table.total, "parameter count differs");
    CHECK(!memcmp(m2.params, m.params, sizeof(real) * m.table.total), "parameters differ");
    CHECK(!memcmp(am2, am, sizeof(real) * m.table.total) && !memcmp(av2, av, sizeof(real) * m.table.total),
          "Adam moments differ");
    free(am2); free(av2);
    model_destroy(&m2);
    free(am); free(av);
    model_destroy(&m);
    unlink(path);
}

static void test_other_model_refused(void) {
    Options o;
    options_default(&o);
    o.model = small(64);          /* the settings say dim 64 ... */
    Model m;
    char err[512];
    FlashConfig c32 = small(32);  /* ... the parameters are of a dim-32 model */
    CHECK(!model_create(&m, &c32, err, sizeof err), "%s", err);
    model_init_params(&m, 1);
    real *am = calloc(m.table.total, sizeof(real)), *av = calloc(m.table.total, sizeof(real));
    TrainState st = {0};
    const char *path = "/tmp/flash_test_ckpt_other.bin";
    CHECK(!checkpoint_save(path, &o, &st, &m, am, av, err, sizeof err), "%s", err);
    Options o2;
    TrainState st2;
    Model m2;
    int rc = checkpoint_load(path, &o2, &st2, &m2, NULL, NULL, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "parameters") && strstr(err, "model config"),
          "a checkpoint of another model must be refused, got rc %d: %s", rc, err);
    if (rc == 0) model_destroy(&m2);
    free(am); free(av);
    model_destroy(&m);
    unlink(path);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_other_model_refused);
    TEST_MAIN_END();
}
