/*
 * A QEMU TCG plugin that counts the guest instructions a program executes (all threads), for the aarch64
 * start-up budget of scripts/check-aarch64.sh: an instruction count is deterministic where emulated time is not.
 *
 * Debian's qemu-user ships the plugin loader but not QEMU's example plugins or qemu-plugin.h, so this file
 * declares the few entry points it uses itself. They are part of the stable plugin API (version 1, QEMU 4.2 to
 * 7.2, is what Debian bookworm's QEMU 7.2 speaks; the calls used here kept their signatures in later versions,
 * whose QEMU_PLUGIN_API can be set with -DCOUNT_PLUGIN_API=N).
 *
 * With `by=function` it counts per function instead (the ELF symbol of each translated block's first instruction;
 * a binary with symbols, not stripped): where an aarch64 build spends its work under emulation. Hand-written
 * assembly without symbol information is counted under "?".
 *
 * Build: cc -shared -fPIC -O2 -o insn-count.so scripts/qemu-insn-count.c
 * Use:   qemu-aarch64 -plugin ./insn-count.so,out=FILE PROGRAM ...   (FILE gets "insns N"; without out=, stderr)
 *        qemu-aarch64 -plugin ./insn-count.so,out=FILE,by=function PROGRAM ...   ("COUNT SYMBOL" lines, unsorted)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef COUNT_PLUGIN_API
#define COUNT_PLUGIN_API 1
#endif

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t; /* only passed through */

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
extern const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *insn);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = COUNT_PLUGIN_API;

static uint64_t insns;
static char out_path[4096];
static int by_function;

/* One function's count (by=function); symbols are interned by their string. */
struct entry {
    const char *symbol;
    uint64_t count;
};

/* One translated block (by=function): its function's entry and its instruction count. */
struct block {
    struct entry *entry;
    uint64_t insns;
};

#define TABLE_SIZE (1 << 16)
static struct entry table[TABLE_SIZE];

static struct entry *intern(const char *symbol) {
    uint64_t h = 1469598103934665603ull;
    for (const char *c = symbol; *c; c++) {
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    }
    for (uint64_t i = 0; i < TABLE_SIZE; i++) {
        struct entry *e = &table[(h + i) & (TABLE_SIZE - 1)];
        if (e->symbol == NULL) {
            e->symbol = strdup(symbol);
            return e;
        }
        if (strcmp(e->symbol, symbol) == 0) {
            return e;
        }
    }
    return &table[0]; /* full: lump the rest together */
}

/* Runs each time a translated block executes; its instruction count rides in the user data. */
static void on_tb_exec(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    __atomic_fetch_add(&insns, (uint64_t)(uintptr_t)userdata, __ATOMIC_RELAXED);
}

/* The same, by function: the user data is the block's record. */
static void on_tb_exec_by_function(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    struct block *b = userdata;
    __atomic_fetch_add(&b->entry->count, b->insns, __ATOMIC_RELAXED);
}

/* Runs once per translated block. Translation is serialized by QEMU, so the symbol table needs no lock; a block's
 * record lives as long as the process. */
static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    uintptr_t n = (uintptr_t)qemu_plugin_tb_n_insns(tb);
    struct block *b = by_function ? malloc(sizeof *b) : NULL;
    if (b == NULL) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
        return;
    }
    const char *symbol = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0));
    b->entry = intern(symbol ? symbol : "?");
    b->insns = n;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec_by_function, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    FILE *out = out_path[0] ? fopen(out_path, "w") : NULL;
    if (by_function) {
        for (size_t i = 0; i < TABLE_SIZE; i++) {
            if (table[i].symbol != NULL && table[i].count > 0) {
                fprintf(out ? out : stderr, "%llu %s\n", (unsigned long long)table[i].count, table[i].symbol);
            }
        }
    } else {
        uint64_t total = __atomic_load_n(&insns, __ATOMIC_RELAXED);
        fprintf(out ? out : stderr, "insns %llu\n", (unsigned long long)total);
    }
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
        } else if (strcmp(argv[i], "by=function") == 0) {
            by_function = 1;
        } else {
            fprintf(stderr, "insn-count: unknown option %s (known: out=FILE, by=function)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
