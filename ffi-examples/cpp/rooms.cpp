// rooms.cpp: chat rooms with the C++ wrapper (sockwave.hpp). A client of
// ws://host:port/lobby joins the room "/lobby"; what it sends reaches the
// others in the room. A message "throw" makes the handler throw: the
// wrapper closes that connection with 1011, and the server goes on.
//
//   ./rooms [ADDR:PORT]     (default 127.0.0.1:9001; port 0 picks one)
//
// SPDX-License-Identifier: CC0-1.0
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <pthread.h>
#include <stdexcept>
#include <string>

#include "sockwave.hpp"

int main(int argc, char **argv) {
    const std::string listen = argc > 1 ? argv[1] : "127.0.0.1:9001";
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    try {
        sockwave::Config config;
        config.listen(listen).shutdown_timeout_ms(2000);

        // The room of each connection, by id, guarded: callbacks of
        // different connections run on different threads.
        struct Rooms {
            std::mutex lock;
            std::map<sw_conn_id, std::string> of;
        } rooms;

        sockwave::Handlers on;
        on.open = [&](sockwave::Connection c, std::string_view path) {
            std::string room(path);
            c.subscribe(room);
            {
                std::lock_guard<std::mutex> g(rooms.lock);
                rooms.of[c.id()] = room;
            }
            c.send_text("joined " + room + " from " + c.peer());
        };
        on.message = [&](sockwave::Connection c, sockwave::Message m) {
            if (m.data == "throw") throw std::runtime_error("asked to");
            std::string room;
            {
                std::lock_guard<std::mutex> g(rooms.lock);
                room = rooms.of[c.id()];
            }
            sw_server_publish_text(c.server(), room.c_str(), m.data.data(), m.data.size(), c.id());
        };
        on.close = [&](sockwave::Connection c, uint16_t code, std::string_view reason) {
            std::lock_guard<std::mutex> g(rooms.lock);
            std::fprintf(stderr, "rooms: %llu left %s: %u %.*s\n", (unsigned long long)c.id(),
                         rooms.of[c.id()].c_str(), code, (int)reason.size(), reason.data());
            rooms.of.erase(c.id());
        };

        sockwave::Server server(config, std::move(on));
        std::printf("rooms: listening on port %u\n", server.port());
        std::fflush(stdout);
        int sig = 0;
        sigwait(&signals, &sig);
    } catch (const sockwave::Error &e) {
        std::fprintf(stderr, "rooms: %s\n", e.what());
        return 1;
    }
    return 0;
}
