//! A visitors file in any format: never a panic, and the same answer whether the bytes arrive
//! whole or in two chunks split anywhere (the daemon receives imports in chunks).
#![no_main]
use edge::{
    import::{Format, Importer},
    Day,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let today = Day(20_600);
    let read = |chunks: &[&[u8]]| {
        let mut importer = Importer::new("fuzz.csv", Format::Auto, today);
        for chunk in chunks {
            importer.feed(chunk)?;
        }
        importer.finish().map(|(history, lines)| (history.iter().collect::<Vec<_>>(), lines))
    };
    let at = usize::from(split).min(data.len());
    let whole = read(&[data]);
    let chunked = read(&[&data[..at], &data[at..]]);
    match (whole, chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("whole {a:?}, chunked {b:?}"),
    }
});
