/* tests/test_checkpoint.c: the checkpoint format on its own: an exact round trip of
 * settings, state, parameters and both Adam moments; and a well-formed file (valid
 * checksum) whose settings describe another model than its parameter block is refused;
 * one flipped byte anywhere is refused; a FIFO in a checkpoint's place is refused at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "checkpoint.h"
#include "test.h"

static FlashConfig small(int dim) {
    FlashConfig c = config_default();
    c.dim = dim; c.depth = 2; c.group_size = 8; c.query_key_dim = 16;
    return c;
}

static Model *open_cpu(const FlashConfig *c) {
    ModelOptions mo = {.device = DEVICE_CPU, .threads = 2, .max_B = 1, .max_T = 8};
    char err[512];
    Model *m = model_open(c, &mo, err, sizeof err);
    CHECK(m, "model_open: %s", err);
    return m;
}

static void test_round_trip(void) {
    Options o;
    options_default(&o);
    o.model = small(32);
    o.seed = 99;
    o.opt.peak_lr = 1.25e-3;
    char err[512];
    Model *m = open_cpu(&o.model);
    if (!m) return;
    model_init_params(m, 5, err, sizeof err);
    const size_t n = model_table(m)->total;
    float *p = malloc(sizeof(float) * n), *am = malloc(sizeof(float) * n), *av = malloc(sizeof(float) * n);
    for (size_t k = 0; k < n; k++) { am[k] = (float)k * 1e-3f; av[k] = (float)k * 1e-6f; }
    CHECK(!model_write(m, STATE_ADAM_M, am, err, sizeof err) && !model_write(m, STATE_ADAM_V, av, err, sizeof err) &&
          !model_read(m, STATE_PARAMS, p, err, sizeof err), "%s", err);
    TrainState st = {.step = 1234, .tokens = 5678, .elapsed_s = 9.5};
    rng_seed(&st.data_rng, 1);
    rng_seed(&st.sample_rng, 2);
    const char *path = "/tmp/flash_test_ckpt.bin";
    CHECK(!checkpoint_save(path, &o, &st, m, err, sizeof err), "%s", err);

    Options o2;
    TrainState st2;
    CkptState cs;
    CHECK(!checkpoint_load(path, &o2, &st2, &cs, err, sizeof err), "%s", err);
    CHECK(o2.model.dim == 32 && o2.seed == 99 && o2.opt.peak_lr == 1.25e-3, "settings differ");
    CHECK(st2.step == 1234 && st2.tokens == 5678 && st2.elapsed_s == 9.5, "state differs");
    CHECK(!memcmp(&st2.data_rng, &st.data_rng, sizeof st.data_rng) &&
          !memcmp(&st2.sample_rng, &st.sample_rng, sizeof st.sample_rng), "generator states differ");
    CHECK(cs.n == n, "parameter count differs");
    if (cs.n == n) {
        CHECK(!memcmp(cs.values, p, sizeof(float) * n), "parameters differ");
        CHECK(!memcmp(cs.values + n, am, sizeof(float) * n) && !memcmp(cs.values + 2 * n, av, sizeof(float) * n),
              "Adam moments differ");
        /* and through a second model: what it reads back is what was saved */
        Model *m2 = open_cpu(&o2.model);
        if (m2) {
            float *back = malloc(sizeof(float) * n);
            CHECK(!checkpoint_apply(&cs, m2, 1, err, sizeof err), "%s", err);
            CHECK(!model_read(m2, STATE_ADAM_V, back, err, sizeof err) && !memcmp(back, av, sizeof(float) * n),
                  "the moments did not reach the model");
            free(back);
            model_close(m2);
        }
    }
    checkpoint_state_free(&cs);
    free(p); free(am); free(av);
    model_close(m);
    unlink(path);
}

static void test_other_model_refused(void) {
    Options o;
    options_default(&o);
    o.model = small(64);          /* the settings say dim 64 ... */
    char err[512];
    FlashConfig c32 = small(32);  /* ... the parameters are of a dim-32 model */
    Model *m = open_cpu(&c32);
    if (!m) return;
    model_init_params(m, 1, err, sizeof err);
    TrainState st = {0};
    const char *path = "/tmp/flash_test_ckpt_other.bin";
    CHECK(!checkpoint_save(path, &o, &st, m, err, sizeof err), "%s", err);
    Options o2;
    TrainState st2;
    CkptState cs;
    int rc = checkpoint_load(path, &o2, &st2, &cs, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "parameters") && strstr(err, "model config"),
          "a checkpoint of another model must be refused, got rc %d: %s", rc, err);
    if (rc == 0) checkpoint_state_free(&cs);
    model_close(m);
    unlink(path);
}

/* Every byte of a checkpoint is covered by a check: a file with any one byte flipped (each
   header byte, and bytes spread over the settings, state and arrays) is refused. */
static void test_every_byte_checked(void) {
    Options o;
    options_default(&o);
    o.model = small(32);
    char err[512];
    Model *m = open_cpu(&o.model);
    if (!m) return;
    model_init_params(m, 3, err, sizeof err);
    TrainState st = {.step = 7, .tokens = 70, .elapsed_s = 1.5};
    rng_seed(&st.data_rng, 1);
    rng_seed(&st.sample_rng, 2);
    const char *path = "/tmp/flash_test_ckpt_flip.bin";
    CHECK(!checkpoint_save(path, &o, &st, m, err, sizeof err), "%s", err);
    model_close(m);
    FILE *f = fopen(path, "rb");
    CHECK(f, "cannot reopen %s", path);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    unsigned char *buf = malloc((size_t)size);
    rewind(f);
    CHECK(fread(buf, 1, (size_t)size, f) == (size_t)size, "short read");
    fclose(f);
    int accepted = 0, tried = 0;
    for (long pos = 0; pos < size; pos += pos < 64 ? 1 : size / 97 + 1) {
        buf[pos] ^= 0x10;
        FILE *w = fopen(path, "wb");
        fwrite(buf, 1, (size_t)size, w);
        fclose(w);
        buf[pos] ^= 0x10;
        Options o2;
        TrainState st2;
        CkptState cs;
        tried++;
        if (checkpoint_load(path, &o2, &st2, &cs, err, sizeof err) == 0) {
            if (accepted++ < 3) fprintf(stderr, "  byte %ld flipped was accepted\n", pos);
            checkpoint_state_free(&cs);
        }
    }
    CHECK(accepted == 0, "%d of %d single-byte flips accepted", accepted, tried);
    free(buf);
    unlink(path);
}

/* A FIFO where a checkpoint should be is refused at once, never waited on. */
static void test_fifo_refused(void) {
    const char *path = "/tmp/flash_test_ckpt_fifo.bin";
    unlink(path);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo failed");
    Options o;
    TrainState st;
    CkptState cs;
    char err[512];
    int rc = checkpoint_load(path, &o, &st, &cs, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "FIFO"), "a FIFO must be refused with a message, got rc %d: %s", rc, err);
    CHECK(!checkpoint_has_magic(path), "a FIFO has no checkpoint magic");
    unlink(path);
}

int main(void) {
    RUN(test_round_trip);
    RUN(test_other_model_refused);
    RUN(test_every_byte_checked);
    RUN(test_fifo_refused);
    TEST_MAIN_END();
}
