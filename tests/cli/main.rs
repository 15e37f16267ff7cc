//! The `kiln` command end to end through the binary, one test binary for link time: `kiln build`
//! (`build`), `kiln check` and the build checks (`check`), `kiln debug` (`debug`), the live
//! tty display (`tty`) and the command's surface without a build (`usage`).

#[path = "../common/mod.rs"]
mod common;

mod build;
mod check;
mod debug;
mod tty;
mod usage;
