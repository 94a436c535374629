//! A minimal stderr logger for the `log` facade: level, thread, message.

use std::io::Write;

struct Stderr {
    level: log::LevelFilter,
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let thread = std::thread::current();
            let _ = writeln!(
                std::io::stderr().lock(),
                "sockwave {:5} [{}] {}",
                record.level(),
                thread.name().unwrap_or("?"),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

pub fn init(level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(Stderr { level })).is_ok() {
        log::set_max_level(level);
    }
}
