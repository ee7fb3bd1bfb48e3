//! Running the storage tools (`btrfs`, `mkfs.btrfs`, `losetup`): a fixed argv, no shell, no
//! inherited environment (only a fixed `PATH`, so the C locale and no `LD_*` or `BTRFS_*`
//! settings of the daemon's reach them), stdin closed, `/` as working directory. Both pipes are
//! read at once so neither can block the tool; stdout is bounded, stderr is kept up to 4 KiB
//! for the error and the rest drained.

use crate::{Result, StorageError};
use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, Stdio};

/// The only `PATH` a tool sees.
pub(crate) const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// What of a tool's stderr goes into an error.
pub(crate) const MAX_STDERR: usize = 4096;

/// The most stdout this crate reads from a tool (a `btrfs subvolume list` of a pool with
/// tens of thousands of subvolumes fits).
const MAX_STDOUT: u64 = 16 << 20;

/// Reads at most `keep` bytes of `pipe`, then drains the rest so the writer never blocks.
/// Returns what was kept and whether more was there.
fn bounded(pipe: Option<impl Read>, keep: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut pipe) = pipe else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    (&mut pipe).take(keep).read_to_end(&mut kept)?;
    let more = std::io::copy(&mut pipe, &mut std::io::sink())? > 0;
    Ok((kept, more))
}

/// The command as a person would type it, for messages.
fn shown(program: &str, args: &[&OsStr]) -> String {
    let mut out = program.to_owned();
    for a in args {
        out.push(' ');
        out.push_str(&a.to_string_lossy());
    }
    out
}

/// A tool that exited unsuccessfully: its command, status and the start of its stderr.
fn failure(
    program: &str,
    args: &[&OsStr],
    status: std::process::ExitStatus,
    err: &[u8],
    err_cut: bool,
) -> StorageError {
    let mut stderr = String::from_utf8_lossy(err).trim().to_owned();
    if err_cut {
        stderr.push_str(" […]");
    }
    if stderr.is_empty() {
        stderr = "no message".to_owned();
    }
    StorageError::Tool {
        command: shown(program, args),
        status: status.to_string(),
        stderr,
    }
}

/// `program args...` as every tool runs: no inherited environment but the fixed `PATH`, `/` as
/// working directory.
fn command(program: &str, args: &[&OsStr]) -> Command {
    tracing::debug!(command = %shown(program, args), "running");
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/");
    command
}

/// Runs `program args...` and returns its stdout; a failure carries the start of its stderr.
pub(crate) fn run(program: &'static str, args: &[&OsStr]) -> Result<String> {
    let spawn_err = |source| StorageError::Spawn { program, source };
    let mut child = command(program, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (out, err) = std::thread::scope(|scope| {
        let err = scope.spawn(move || bounded(stderr, MAX_STDERR as u64));
        let out = bounded(stdout, MAX_STDOUT);
        (
            out,
            err.join()
                .unwrap_or_else(|_| Ok((b"(stderr reader panicked)".to_vec(), false))),
        )
    });
    let status = child.wait().map_err(spawn_err)?;
    let (out, out_cut) = out.map_err(spawn_err)?;
    let (err, err_cut) = err.map_err(spawn_err)?;
    if !status.success() {
        return Err(failure(program, args, status, &err, err_cut));
    }
    if out_cut {
        return Err(StorageError::ToolOutput {
            command: shown(program, args),
            detail: format!("more than {MAX_STDOUT} bytes of output"),
        });
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs `program args...` with its stdout going to `out` and, when given, `input` copied into
/// its stdin (`btrfs send` into a file, `btrfs receive` from a stream); a failure carries the
/// start of its stderr. A tool that stops reading its input ends the copy; its status decides.
pub(crate) fn run_streams(
    program: &'static str,
    args: &[&OsStr],
    input: Option<&mut dyn Read>,
    out: Option<std::fs::File>,
) -> Result<()> {
    let spawn_err = |source| StorageError::Spawn { program, source };
    let mut child = command(program, args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(match out {
            Some(f) => Stdio::from(f),
            None => Stdio::null(),
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let (stdin, stderr) = (child.stdin.take(), child.stderr.take());
    let (err, read) = std::thread::scope(|scope| {
        let err = scope.spawn(move || bounded(stderr, MAX_STDERR as u64));
        let read = match (input, stdin) {
            (Some(input), Some(stdin)) => feed(input, stdin),
            _ => Ok(()),
        };
        let err = err
            .join()
            .unwrap_or_else(|_| Ok((b"(stderr reader panicked)".to_vec(), false)));
        (err, read)
    });
    let status = child.wait().map_err(spawn_err)?;
    let (err, err_cut) = err.map_err(spawn_err)?;
    if !status.success() {
        return Err(failure(program, args, status, &err, err_cut));
    }
    // The tool may have taken a stream that was cut short: the input's own error decides.
    read.map_err(|source| StorageError::Spawn { program, source })
}

/// Copies `input` into the tool's stdin until its end. The tool closing its end (a broken
/// pipe: it read what it needed) ends the copy; an error reading `input` is returned.
fn feed(input: &mut dyn Read, mut stdin: std::process::ChildStdin) -> std::io::Result<()> {
    use std::io::Write;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Err(e) = stdin.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_only_the_fixed_path() {
        let out = run("env", &[]).unwrap();
        assert_eq!(out.trim(), format!("PATH={PATH}"));
    }

    #[test]
    fn failure_carries_bounded_stderr() {
        // 10,000 bytes on stderr, then a failure: the error keeps the first 4 KiB.
        let err = run(
            "sh",
            &[
                OsStr::new("-c"),
                OsStr::new("head -c 10000 /dev/zero | tr '\\0' x >&2; exit 3"),
            ],
        )
        .unwrap_err();
        let StorageError::Tool {
            command,
            status,
            stderr,
        } = err
        else {
            panic!("unexpected error {err}");
        };
        assert!(command.starts_with("sh -c "), "{command}");
        assert!(status.contains('3'), "{status}");
        assert!(stderr.starts_with("xxxx"));
        assert_eq!(stderr.len(), MAX_STDERR + " […]".len());
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run("rxd-no-such-tool", &[]).unwrap_err();
        assert!(matches!(err, StorageError::Spawn { .. }), "{err}");
    }
}
