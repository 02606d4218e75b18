//! The exit-code-set parser: never panics; every plain code and range
//! listed is in the set and nothing else is; the printed set reads back as
//! the same set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patience::conditions::CodeSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = CodeSet::parse(text) else {
        return;
    };
    // A model of the grammar: items split on commas, "N" or "LO-HI".
    let mut model = [false; 256];
    for item in text.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let (lo, hi): (usize, usize) = (lo.trim().parse().unwrap(), hi.trim().parse().unwrap());
        for m in &mut model[lo..=hi] {
            *m = true;
        }
    }
    for code in -1..=256 {
        let want = usize::try_from(code)
            .ok()
            .and_then(|c| model.get(c))
            .copied()
            .unwrap_or(false);
        assert_eq!(set.contains(code), want, "{text:?}: code {code}");
    }
    let shown = set.to_string();
    if !set.is_empty() {
        let back = CodeSet::parse(&shown).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
        assert_eq!(back, set, "{text:?} printed as {shown:?}");
    }
});
