#![no_std]
// A library target so edge-user can name this crate as a build-dependency (cargo rebuilds the
// embedded program when it changes); the program itself is the `edge` binary.
