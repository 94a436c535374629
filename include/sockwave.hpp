// sockwave.hpp: a thin, header-only C++17 wrapper over sockwave.h.
//
// RAII for the config and the server, std::string_view in and out, and the
// callbacks as lambdas (std::function). It adds no state of its own beyond
// the handlers; everything else is the C API (see the rules at the top of
// sockwave.h: callbacks run on worker threads, one connection's in order).
//
//     sockwave::Config config;
//     config.listen("127.0.0.1:9001");
//     sockwave::Handlers on;
//     on.message = [](sockwave::Connection c, sockwave::Message m) { c.send(m); };
//     sockwave::Server server(config, std::move(on));
//
// An exception escaping a handler never crosses into the library: the
// connection is closed with 1011 instead (as a panicking Rust handler's is).
//
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef SOCKWAVE_HPP
#define SOCKWAVE_HPP

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "sockwave.h"

namespace sockwave {

// A call the library refused, with its result code.
class Error : public std::runtime_error {
public:
    Error(sw_result code, const std::string &what)
        : std::runtime_error(what + ": " + sw_result_str(code)), code_(code) {}
    sw_result code() const noexcept { return code_; }

private:
    sw_result code_;
};

inline void check(sw_result r, const char *what) {
    if (r != SW_RESULT_OK) throw Error(r, what);
}

// A received message, borrowed for the handler's call.
struct Message {
    sw_message_kind kind;
    std::string_view data;
    bool is_text() const noexcept { return kind == SW_MESSAGE_KIND_TEXT; }
};

// One connection: a server and an id, cheap to copy, usable from any
// thread; once the connection is gone, calls answer SW_RESULT_CLOSED.
class Connection {
public:
    Connection(const sw_server *server, sw_conn_id id) noexcept : server_(server), id_(id) {}

    sw_conn_id id() const noexcept { return id_; }
    const sw_server *server() const noexcept { return server_; }

    sw_result send_text(std::string_view text) const noexcept {
        return sw_conn_send_text(server_, id_, text.data(), text.size());
    }
    sw_result send_binary(std::string_view bytes) const noexcept {
        return sw_conn_send_binary(server_, id_, reinterpret_cast<const uint8_t *>(bytes.data()),
                                   bytes.size());
    }
    // The same kind as `m`.
    sw_result send(const Message &m) const noexcept {
        return m.is_text() ? send_text(m.data) : send_binary(m.data);
    }
    sw_result close(uint16_t code = 1000, std::string_view reason = {}) const noexcept {
        return sw_conn_close(server_, id_, code, reason.data(), reason.size());
    }
    sw_result subscribe(const std::string &topic) const noexcept {
        return sw_conn_subscribe(server_, id_, topic.c_str());
    }
    // The client's address ("1.2.3.4:5678"), or empty.
    std::string peer() const {
        char buf[SW_ADDR_MAX];
        size_t len = 0;
        if (sw_conn_peer_addr(server_, id_, buf, sizeof buf, &len) != SW_RESULT_OK) return {};
        return std::string(buf, len);
    }

private:
    const sw_server *server_;
    sw_conn_id id_;
};

// The handlers; any may be empty. `data` is the connection's user data
// (sw_conn_set_user_data), which these handlers may also ignore.
struct Handlers {
    std::function<void(Connection, std::string_view path)> open;
    std::function<void(Connection, Message)> message;
    std::function<void(Connection, uint16_t code, std::string_view reason)> close;
};

// sw_config, owned.
class Config {
public:
    Config() : raw_(sw_config_new()) {
        if (raw_ == nullptr) throw Error(SW_RESULT_PANIC, "sw_config_new");
    }
    ~Config() { sw_config_free(raw_); }
    Config(const Config &) = delete;
    Config &operator=(const Config &) = delete;

    Config &listen(const std::string &addr) {
        check(sw_config_set_listen(raw_, addr.c_str()), "sw_config_set_listen");
        return *this;
    }
    Config &threads(uint32_t loops, uint32_t workers) {
        check(sw_config_set_threads(raw_, loops), "sw_config_set_threads");
        check(sw_config_set_workers(raw_, workers), "sw_config_set_workers");
        return *this;
    }
    // Callbacks on the event loops (for handlers that never block).
    Config &inline_dispatch(bool on_loops = true) {
        check(sw_config_set_inline_dispatch(raw_, on_loops), "sw_config_set_inline_dispatch");
        return *this;
    }
    Config &shutdown_timeout_ms(uint32_t ms) {
        check(sw_config_set_shutdown_timeout(raw_, ms), "sw_config_set_shutdown_timeout");
        return *this;
    }
    sw_config *raw() noexcept { return raw_; }
    const sw_config *raw() const noexcept { return raw_; }

private:
    sw_config *raw_;
};

// A running server; the destructor closes every connection (1001), waits
// for the close handshakes up to the shutdown timeout, and joins.
class Server {
public:
    Server(const Config &config, Handlers handlers) : handlers_(new Handlers(std::move(handlers))) {
        sw_callbacks cbs{};
        cbs.userdata = handlers_.get();
        cbs.on_open = &Server::on_open;
        cbs.on_message = &Server::on_message;
        cbs.on_close = &Server::on_close;
        check(sw_server_start(config.raw(), &cbs, &raw_), "sw_server_start");
    }
    ~Server() { sw_server_free(raw_); }
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    uint16_t port() const {
        uint16_t port = 0;
        check(sw_server_local_port(raw_, &port), "sw_server_local_port");
        return port;
    }
    sw_result broadcast_text(std::string_view text, sw_conn_id except = SW_CONN_NONE) const noexcept {
        return sw_server_broadcast_text(raw_, text.data(), text.size(), except);
    }
    sw_result publish_text(const std::string &topic, std::string_view text,
                           sw_conn_id except = SW_CONN_NONE) const noexcept {
        return sw_server_publish_text(raw_, topic.c_str(), text.data(), text.size(), except);
    }
    const sw_server *raw() const noexcept { return raw_; }

private:
    // Runs `f`; an exception from it closes the connection with 1011 rather
    // than unwind through the library.
    template <typename F>
    static void guarded(const sw_server *server, sw_conn_id conn, F &&f) noexcept {
        try {
            f();
        } catch (...) {
            static const char reason[] = "handler error";
            sw_conn_close(server, conn, 1011, reason, sizeof reason - 1);
        }
    }

    static void on_open(void *ud, const sw_server *s, sw_conn_id conn, void *, const sw_request *req) {
        auto *h = static_cast<Handlers *>(ud);
        if (!h->open) return;
        sw_str path = sw_request_path(req);
        guarded(s, conn, [&] { h->open(Connection(s, conn), std::string_view(path.ptr, path.len)); });
    }
    static void on_message(void *ud, const sw_server *s, sw_conn_id conn, void *, sw_message_kind kind,
                           const uint8_t *data, size_t len) {
        auto *h = static_cast<Handlers *>(ud);
        if (!h->message) return;
        Message m{kind, std::string_view(reinterpret_cast<const char *>(data), len)};
        guarded(s, conn, [&] { h->message(Connection(s, conn), m); });
    }
    static void on_close(void *ud, const sw_server *s, sw_conn_id conn, void *, uint16_t code, sw_str reason) {
        auto *h = static_cast<Handlers *>(ud);
        if (!h->close) return;
        std::string_view r(reason.ptr == nullptr ? "" : reason.ptr, reason.len);
        guarded(s, conn, [&] { h->close(Connection(s, conn), code, r); });
    }

    std::unique_ptr<Handlers> handlers_;
    sw_server *raw_ = nullptr;
};

}  // namespace sockwave

#endif  // SOCKWAVE_HPP
