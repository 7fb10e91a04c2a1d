//! The store's files as a crash, a disk or a person could leave them: never a panic. The
//! first byte says which file the rest is: a log, or a snapshot.
#![no_main]
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let result = if which % 2 == 0 {
        edge::store::recover(None, &[(PathBuf::from("wal-1.log"), bytes.to_vec())])
    } else {
        edge::store::recover(Some((Path::new("snapshot"), bytes)), &[])
    };
    let _ = result;
});
