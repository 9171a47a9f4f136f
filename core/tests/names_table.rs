//! The placeholder table at its bound, in a process of its own (the table is process-global).
use tsproxy_core::names::{self, InternError, MAX_NAMES, SLOTS};

#[test]
fn a_full_table_says_full_and_keeps_every_name() {
    // This process's table alone: 57,337 test names must not go into the user's shared name
    // registry (core/src/registry.rs), which outlives the test.
    tsproxy_core::registry::disable();
    // Fill from several threads at once: the bound must hold under races too.
    let per = MAX_NAMES / 4 + 100;
    let got: Vec<Vec<(String, Result<u32, InternError>)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|t| s.spawn(move || (0..per).map(|i| format!("n{t}-{i}")).map(|n| (n.clone(), names::try_intern(&n))).collect())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<_> = got.into_iter().flatten().collect();
    let ok: Vec<_> = all.iter().filter_map(|(n, r)| r.ok().map(|s| (n, s))).collect();
    let full = all.iter().filter(|(_, r)| *r == Err(InternError::Full)).count();
    assert_eq!(ok.len(), MAX_NAMES, "exactly MAX_NAMES names fit");
    assert_eq!(full, all.len() - MAX_NAMES, "every other name is refused as Full, nothing else");
    assert_eq!(names::used(), MAX_NAMES);
    // Every slot handed out still means its name (no eviction), and slots are distinct.
    let mut slots: Vec<u32> = ok.iter().map(|(_, s)| *s).collect();
    for (n, s) in &ok {
        assert_eq!(names::name(*s), Some(n.as_str()));
    }
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), MAX_NAMES);
    // A name already in the table is still found when it is full; a new one is not.
    let (n, s) = ok[ok.len() / 2];
    assert_eq!(names::try_intern(n), Ok(s));
    assert_eq!(names::try_intern(&n.to_uppercase()), Ok(s));
    assert_eq!(names::try_intern("brand-new-name"), Err(InternError::Full));
    let free = (0..SLOTS).find(|&i| names::name(i).is_none()).unwrap();
    assert!(!names::intern_at(free, "brand-new-name"), "intern_at respects the bound");
    assert!(names::name(free).is_none());
    // The reason is distinct from a bad name, so the caller logs the right thing.
    assert_eq!(names::try_intern("bad name"), Err(InternError::Invalid));
    assert_eq!(names::try_intern(&"a".repeat(300)), Err(InternError::TooLong));
}
