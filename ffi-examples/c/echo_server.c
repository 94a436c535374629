/*
 * echo_server.c: the smallest complete sockwave server in C.
 * Every text and binary message goes back to its sender. Each connection
 * keeps a small session (its client's address and a message count) made in
 * the handshake callback, handed to every callback as `conn_data`, and
 * freed in on_close.
 *
 *   ./echo_server [ADDR:PORT]     (default 127.0.0.1:9001; port 0 picks one)
 *   ./echo_server --version
 *
 * SPDX-License-Identifier: CC0-1.0
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockwave.h"

/* What the server keeps with each connection for us. */
struct session {
    char peer[SW_ADDR_MAX];
    unsigned long messages;
};

/* Runs on an event loop: keep it short. */
static void on_handshake(void *userdata, const sw_server *server, const sw_request *req,
                         sw_upgrade *up) {
    (void)userdata;
    (void)server;
    (void)req;
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        sw_upgrade_reject(up, 503, (const uint8_t *)"out of memory", 13);
        return;
    }
    size_t len = 0;
    if (sw_upgrade_peer_addr(up, s->peer, sizeof s->peer, &len) != SW_RESULT_OK) {
        strcpy(s->peer, "?");
    }
    sw_upgrade_set_user_data(up, s);
}

/* Runs on a worker thread; `data` is only valid during the call. Callbacks
 * of one connection never run at once, so the session needs no lock. */
static void on_message(void *userdata, const sw_server *server, sw_conn_id conn,
                       void *conn_data, sw_message_kind kind, const uint8_t *data, size_t len) {
    (void)userdata;
    struct session *s = conn_data;
    s->messages++;
    if (kind == SW_MESSAGE_KIND_TEXT) {
        sw_conn_send_text(server, conn, (const char *)data, len);
    } else {
        sw_conn_send_binary(server, conn, data, len);
    }
}

/* The last callback of a connection: its session is ours to free. */
static void on_close(void *userdata, const sw_server *server, sw_conn_id conn, void *conn_data,
                     uint16_t code, sw_str reason) {
    (void)userdata;
    (void)server;
    struct session *s = conn_data;
    fprintf(stderr, "echo_server: connection %llu from %s closed: %u %.*s (%lu messages)\n",
            (unsigned long long)conn, s->peer, code, (int)reason.len,
            reason.ptr ? reason.ptr : "", s->messages);
    free(s);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("header %s library %s\n", SW_VERSION_STRING, sw_version());
        return 0;
    }
    const char *listen = argc > 1 ? argv[1] : "127.0.0.1:9001";

    /* Block SIGINT/SIGTERM before the server starts its threads, so they
     * inherit the mask and sigwait() below receives the signal. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    sw_config *config = sw_config_new();
    sw_result r = sw_config_set_listen(config, listen);
    if (r != SW_RESULT_OK) {
        fprintf(stderr, "echo_server: %s: %s\n", listen, sw_result_str(r));
        sw_config_free(config);
        return 2;
    }
    sw_callbacks callbacks = {
        .userdata = NULL,
        .on_handshake = on_handshake,
        .on_message = on_message,
        .on_close = on_close,
    };
    sw_server *server = NULL;
    r = sw_server_start(config, &callbacks, &server);
    sw_config_free(config);
    if (r != SW_RESULT_OK) {
        fprintf(stderr, "echo_server: cannot start: %s\n", sw_result_str(r));
        return 1;
    }
    uint16_t port = 0;
    sw_server_local_port(server, &port);
    printf("echo_server: listening on port %u\n", port);
    fflush(stdout);

    int sig = 0;
    sigwait(&signals, &sig);
    /* Closes every connection with 1001, waits for the close handshakes, joins. */
    sw_server_free(server);
    fprintf(stderr, "echo_server: stopped on signal %d\n", sig);
    return 0;
}
