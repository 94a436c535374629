// chat_ticker.cpp: a chat room plus a ticker, in C++.
// Whatever one client sends reaches every other client; a thread of our own
// broadcasts "tick N" every interval. It shows that sockwave may be called from
// any thread: the ticker is not one of the server's threads.
//
//   ./chat_ticker [ADDR:PORT] [TICK_MS]      (defaults 127.0.0.1:9001, 1000)
//
// SPDX-License-Identifier: CC0-1.0
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include <pthread.h>

#include "sockwave.h"

namespace {

struct Room {
    std::atomic<unsigned long long> relayed{0};
};

void on_open(void *, const sw_server *server, sw_conn_id conn, void *, const sw_request *req) {
    sw_str path = sw_request_path(req);
    std::string hello = "welcome to " + std::string(path.ptr, path.len);
    sw_conn_send_text(server, conn, hello.data(), hello.size());
}

void on_message(void *userdata, const sw_server *server, sw_conn_id conn, void *, sw_message_kind kind,
                const uint8_t *data, size_t len) {
    auto *room = static_cast<Room *>(userdata);
    if (kind == SW_MESSAGE_KIND_TEXT) {
        sw_server_broadcast_text(server, reinterpret_cast<const char *>(data), len, conn);
    } else {
        sw_server_broadcast_binary(server, data, len, conn);
    }
    room->relayed.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

int main(int argc, char **argv) {
    const char *listen = argc > 1 ? argv[1] : "127.0.0.1:9001";
    const int tick_ms = argc > 2 ? std::atoi(argv[2]) : 1000;

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    std::unique_ptr<sw_config, decltype(&sw_config_free)> config(sw_config_new(), &sw_config_free);
    if (sw_result r = sw_config_set_listen(config.get(), listen); r != SW_RESULT_OK) {
        std::fprintf(stderr, "chat_ticker: %s: %s\n", listen, sw_result_str(r));
        return 2;
    }
    Room room;
    sw_callbacks callbacks{};
    callbacks.userdata = &room;
    callbacks.on_open = on_open;
    callbacks.on_message = on_message;
    sw_server *raw = nullptr;
    if (sw_result r = sw_server_start(config.get(), &callbacks, &raw); r != SW_RESULT_OK) {
        std::fprintf(stderr, "chat_ticker: cannot start: %s\n", sw_result_str(r));
        return 1;
    }
    std::unique_ptr<sw_server, decltype(&sw_server_free)> server(raw, &sw_server_free);
    uint16_t port = 0;
    sw_server_local_port(server.get(), &port);
    std::printf("chat_ticker: listening on port %u\n", port);
    std::fflush(stdout);

    std::atomic<bool> running{true};
    std::thread ticker([&] {
        for (unsigned long long n = 0; running.load(); ++n) {
            std::string tick = "tick " + std::to_string(n);
            sw_server_broadcast_text(server.get(), tick.data(), tick.size(), SW_CONN_NONE);
            std::this_thread::sleep_for(std::chrono::milliseconds(tick_ms));
        }
    });

    int sig = 0;
    sigwait(&signals, &sig);
    running = false;
    ticker.join();
    sw_stats stats{};
    sw_server_stats(server.get(), &stats);
    // A counter sw_stats has no room for: bugs of sockwave's own, met and contained.
    uint64_t loop_panics = 0;
    sw_server_counter(server.get(), SW_COUNTER_LOOP_PANICS, &loop_panics);
    server.reset();  // closes every connection with 1001 and joins
    std::fprintf(stderr, "chat_ticker: relayed %llu messages, %llu connections, %llu loop panics\n",
                 room.relayed.load(), static_cast<unsigned long long>(stats.connections_total),
                 static_cast<unsigned long long>(loop_panics));
    return 0;
}
