//! The `kiln` command end to end through the binary, one test binary for link time: `kiln build`
//! (`build`), `kiln check` and the build checks (`check`), `kiln debug` (`debug`), the live
//! tty display (`tty`), the command's surface without a build (`usage`), the unpack at
//! `kiln pull` and `kiln load` (`pull`), a RUN step's `volatile` overlay (`volatile`) and layers
//! written only when first read (`deferred`).

#[path = "../common/mod.rs"]
mod common;

mod build;
mod check;
mod debug;
mod deferred;
mod pull;
mod tty;
mod usage;
mod volatile;
