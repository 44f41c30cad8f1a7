/*
 * A QEMU TCG plugin that counts the guest instructions a program executes (all threads), for the aarch64
 * start-up budget of scripts/check-aarch64.sh: an instruction count is deterministic where emulated time is not.
 *
 * Debian's qemu-user ships the plugin loader but not QEMU's example plugins or qemu-plugin.h, so this file
 * declares the few entry points it uses itself. They are part of the stable plugin API (version 1, QEMU 4.2 to
 * 7.2, is what Debian bookworm's QEMU 7.2 speaks; the calls used here kept their signatures in later versions,
 * whose QEMU_PLUGIN_API can be set with -DCOUNT_PLUGIN_API=N).
 *
 * Build: cc -shared -fPIC -O2 -o insn-count.so scripts/qemu-insn-count.c
 * Use:   qemu-aarch64 -plugin ./insn-count.so,out=FILE PROGRAM ...   (FILE gets "insns N"; without out=, stderr)
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef COUNT_PLUGIN_API
#define COUNT_PLUGIN_API 1
#endif

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t; /* only passed through */

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = COUNT_PLUGIN_API;

static uint64_t insns;
static char out_path[4096];

/* Runs each time a translated block executes; its instruction count rides in the user data. */
static void on_tb_exec(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    __atomic_fetch_add(&insns, (uint64_t)(uintptr_t)userdata, __ATOMIC_RELAXED);
}

/* Runs once per translated block. */
static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    uintptr_t n = (uintptr_t)qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    uint64_t total = __atomic_load_n(&insns, __ATOMIC_RELAXED);
    FILE *out = out_path[0] ? fopen(out_path, "w") : NULL;
    fprintf(out ? out : stderr, "insns %llu\n", (unsigned long long)total);
    if (out) {
        fclose(out);
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else {
            fprintf(stderr, "insn-count: unknown option %s (known: out=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
