//! Catching panics of the core inside a run, quietly.
//!
//! A panic in a replica is a bug the run must report as its failure, not a crash of the test
//! or of a swarm of thousands of seeds. The first run installs a panic hook (once per process)
//! that, on a thread currently inside [`catching`], records the message and location instead of
//! printing them; on any other thread it defers to the hook that was installed before, so panics
//! outside simulations print as usual.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the quiet hook, once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let location = info
                    .location()
                    .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
                let message = format!("{}{location}", payload_message(info.payload()));
                CAPTURED.with(|captured| *captured.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic becomes `Err` with its message and location.
pub(crate) fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    CAPTURED.with(|captured| captured.borrow_mut().take());
    CAPTURING.with(|capturing| capturing.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|capturing| capturing.set(false));
    result.map_err(|payload| {
        CAPTURED
            .with(|captured| captured.borrow_mut().take())
            .unwrap_or_else(|| payload_message(payload.as_ref()))
    })
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
