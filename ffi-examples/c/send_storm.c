/*
 * send_storm.c: several threads of our own send to every open connection at
 * once while clients come and go. Used by tests/ffi_examples.rs to check that
 * no message is lost, duplicated or delivered to the wrong connection.
 *
 * Each connection first receives "id <conn>"; then thread t sends it
 * "c <conn> t <t> s <seq>" with seq = 0, 1, 2, ... counting only the sends that
 * returned SW_RESULT_OK. A client must see, per thread, exactly 0..k in order.
 *
 *   ./send_storm [ADDR:PORT] [THREADS]     (defaults 127.0.0.1:0, 4)
 *
 * SPDX-License-Identifier: CC0-1.0
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sockwave.h"

#define MAX_CONNS 4096
#define MAX_THREADS 32

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static sw_conn_id registry[MAX_CONNS];
static size_t registry_len = 0;
static atomic_bool running = true;
static atomic_ullong sent_ok = 0, sent_closed = 0, sent_backpressure = 0;
static const sw_server *the_server = NULL;

static void on_open(void *userdata, const sw_server *server, sw_conn_id conn, void *conn_data,
                    const sw_request *req) {
    (void)userdata;
    (void)conn_data;
    (void)req;
    char hello[64];
    int n = snprintf(hello, sizeof hello, "id %llu", (unsigned long long)conn);
    /* Sent before the connection is registered: it is the first message. */
    sw_conn_send_text(server, conn, hello, (size_t)n);
    pthread_mutex_lock(&registry_lock);
    if (registry_len < MAX_CONNS) registry[registry_len++] = conn;
    pthread_mutex_unlock(&registry_lock);
}

static void on_close(void *userdata, const sw_server *server, sw_conn_id conn, void *conn_data,
                     uint16_t code, sw_str reason) {
    (void)userdata;
    (void)conn_data;
    (void)server;
    (void)code;
    (void)reason;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < registry_len; i++) {
        if (registry[i] == conn) {
            registry[i] = registry[--registry_len];
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

struct seq { sw_conn_id conn; unsigned long long next; };

static void *sender(void *arg) {
    int t = (int)(size_t)arg;
    static _Thread_local struct seq seqs[MAX_CONNS];
    size_t nseqs = 0;
    sw_conn_id snapshot[MAX_CONNS];
    struct timespec pause = {0, 500 * 1000};
    while (atomic_load(&running)) {
        pthread_mutex_lock(&registry_lock);
        size_t n = registry_len;
        memcpy(snapshot, registry, n * sizeof snapshot[0]);
        pthread_mutex_unlock(&registry_lock);
        for (size_t i = 0; i < n; i++) {
            struct seq *s = NULL;
            for (size_t j = 0; j < nseqs; j++) {
                if (seqs[j].conn == snapshot[i]) { s = &seqs[j]; break; }
            }
            if (!s) {
                if (nseqs == MAX_CONNS) nseqs = 0; /* forget old, closed ones */
                s = &seqs[nseqs++];
                s->conn = snapshot[i];
                s->next = 0;
            }
            char msg[96];
            int len = snprintf(msg, sizeof msg, "c %llu t %d s %llu", (unsigned long long)s->conn, t, s->next);
            sw_result r = sw_conn_send_text(the_server, s->conn, msg, (size_t)len);
            if (r == SW_RESULT_OK) {
                s->next++;
                atomic_fetch_add(&sent_ok, 1);
            } else if (r == SW_RESULT_CLOSED) {
                atomic_fetch_add(&sent_closed, 1);
            } else if (r == SW_RESULT_BACKPRESSURE) {
                atomic_fetch_add(&sent_backpressure, 1);
            } else {
                fprintf(stderr, "send_storm: unexpected %s\n", sw_result_str(r));
                abort();
            }
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *listen = argc > 1 ? argv[1] : "127.0.0.1:0";
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (threads < 1 || threads > MAX_THREADS) threads = 4;

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    sw_config *config = sw_config_new();
    if (sw_config_set_listen(config, listen) != SW_RESULT_OK) return 2;
    sw_callbacks callbacks = {.on_open = on_open, .on_close = on_close};
    sw_server *server = NULL;
    sw_result r = sw_server_start(config, &callbacks, &server);
    sw_config_free(config);
    if (r != SW_RESULT_OK) {
        fprintf(stderr, "send_storm: cannot start: %s\n", sw_result_str(r));
        return 1;
    }
    the_server = server;
    uint16_t port = 0;
    sw_server_local_port(server, &port);
    printf("send_storm: listening on port %u\n", port);
    fflush(stdout);

    pthread_t tids[MAX_THREADS];
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, sender, (void *)(size_t)t);
    int sig = 0;
    sigwait(&signals, &sig);
    atomic_store(&running, false);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    sw_server_free(server);
    printf("send_storm: ok=%llu closed=%llu backpressure=%llu\n", (unsigned long long)atomic_load(&sent_ok),
           (unsigned long long)atomic_load(&sent_closed), (unsigned long long)atomic_load(&sent_backpressure));
    return 0;
}
