//! Fuzzes the RESP request parser with arbitrary bytes: it must never panic, never claim more
//! bytes than it was given, and parse the same commands however the input is split.
#![no_main]

use hoardhaven_resp_proto::{ParseLimits, parse::parse};
use libfuzzer_sys::fuzz_target;

fn all(input: &[u8], limits: &ParseLimits) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        match parse(&input[at..], limits) {
            Ok(Some((args, used))) => {
                assert!(used > 0 && at + used <= input.len(), "claims {used} bytes");
                at += used;
                out.push(args.iter().map(|a| a.to_vec()).collect());
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let limits = ParseLimits {
        max_args: 64,
        max_bulk: 1024,
        max_inline: 512,
        max_request: 4096,
    };
    let (whole, _) = all(input, &limits);
    // Fed in two parts, the commands complete in the first part are a prefix of the whole.
    let cut = input.len() / 2;
    let (first, failed) = all(&input[..cut], &limits);
    if !failed {
        assert!(first.len() <= whole.len());
        assert_eq!(first[..], whole[..first.len()]);
    }
});
