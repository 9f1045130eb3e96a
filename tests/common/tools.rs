//! External checkers the suites run (promtool, openapi-spec-validator, Chromium): run one,
//! skipping with a note when it is not installed unless the tools are required.

/// Runs an external checker. When it is not installed, the check is skipped with a note, unless
/// `HOARDHAVEN_REQUIRE_TOOLS` is set (as `.ci/run` should, after installing promtool, chromium
/// and openapi-spec-validator): then a missing checker fails the test.
pub fn external(
    name: &str,
    cmd: &mut std::process::Command,
    stdin: Option<&[u8]>,
) -> Option<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            super::skip_unless_required(&format!("{name} is not installed ({e}); check skipped"));
            return None;
        }
    };
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    Some(child.wait_with_output().expect("wait"))
}

pub fn show(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
