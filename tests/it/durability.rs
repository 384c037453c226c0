//! The app is told about a file only once its bytes and its name are durable: watched
//! with `strace` on the real binary, every stored file is renamed into place, then its
//! `fsync` and its folder's `fsync` return, and only then does the metadata request
//! that names it go out.

use crate::support::*;
use std::path::Path;

/// One traced system call: which thread, and the line (`-y` puts a descriptor's path
/// beside it).
struct Call<'a> {
    pid: &'a str,
    text: &'a str,
}

fn calls(trace: &str) -> Vec<Call<'_>> {
    trace
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(pid, text)| Call {
            pid,
            text: text.trim_start(),
        })
        .collect()
}

/// Where the call that starts at `at` returned 0: its own line, or the line that
/// resumes it on the same thread.
fn returned(calls: &[Call], at: usize) -> Option<usize> {
    if !calls[at].text.contains("<unfinished ...>") {
        return calls[at].text.ends_with("= 0").then_some(at);
    }
    let (pid, name) = (calls[at].pid, calls[at].text.split('(').next()?);
    let resumed = format!("<... {name} resumed>");
    let end =
        (at + 1..calls.len()).find(|&i| calls[i].pid == pid && calls[i].text.contains(&resumed))?;
    calls[end].text.ends_with("= 0").then_some(end)
}

/// Checks the order for the file `id` stored under `root`; what is wrong, if anything.
fn durable_before_told(calls: &[Call], root: &Path, id: &str) -> Result<(), String> {
    let file = root.join(&id[0..2]).join(&id[2..4]).join(id);
    let folder = file.parent().ok_or("no folder")?.display().to_string();
    let find = |from: usize, what: &dyn Fn(&str) -> bool| {
        (from..calls.len()).find(|&i| what(calls[i].text))
    };
    let into = format!("\"{}\"", file.display());
    // The first rename may find the folder missing (ENOENT) and be tried again.
    let renamed = (0..calls.len())
        .filter(|&i| calls[i].text.starts_with("rename") && calls[i].text.contains(&into))
        .find_map(|at| returned(calls, at))
        .ok_or(format!("no rename into {}", file.display()))?;
    let told = find(renamed, &|t| {
        (t.starts_with("sendto") || t.starts_with("writev"))
            && t.contains("HTTP/1.1")
            && t.contains(id)
    })
    .ok_or(format!("no metadata request naming {id}"))?;
    // The file may be synced before its rename (under its temporary name) or after;
    // its folder only after, or the new name is not what was synced.
    let file_synced = (0..told)
        .filter(|&i| {
            calls[i].text.starts_with("fsync(") && calls[i].text.contains(&format!("/{id}"))
        })
        .find_map(|at| returned(calls, at));
    let folder_synced = (renamed..calls.len())
        .filter(|&i| {
            calls[i].text.starts_with("fsync(") && calls[i].text.contains(&format!("<{folder}>"))
        })
        .find_map(|at| returned(calls, at));
    for (what, synced) in [("file", file_synced), ("folder", folder_synced)] {
        match synced {
            None => return Err(format!("the {what} of {id} was never synced")),
            Some(at) if at > told => {
                return Err(format!(
                    "the app was told of {id} before its {what} was synced"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_told_only_after_the_file_and_its_name_are_synced() {
    let backend = Backend::ok().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .upload(Upload::raw("/raw"))
        .upload(Upload::multipart("/upload"))
        .backend(backend.addr)
        .write(dir.path());
    let trace = dir.path().join("trace");
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-y", "-s", "65536", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=rename,renameat,renameat2,fsync,fdatasync,sendto,writev",
        ])
        .arg(env!("CARGO_BIN_EXE_porter"))
        .args(["serve", "-c"])
        .arg(&config);
    let mut proc = Proc::spawn(cmd);
    let port = proc.port();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for i in 0..3u8 {
        let raw = request("POST", &url("/raw"))
            .body(data(10_000, i))
            .send()
            .await;
        assert_eq!(raw.status, 200, "{:?}", raw.body);
        let form = Form::new().file("f", "a.bin", "application/octet-stream", &data(20_000, i));
        let multipart = request("POST", &url("/upload")).form(form).send().await;
        assert_eq!(multipart.status, 200, "{:?}", multipart.body);
    }
    // porter is strace's child.
    let strace = proc.child.id();
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .expect("strace's children");
    let porter: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("porter runs under strace");
    // SAFETY: kill(2) on porter, a child of our strace child, still running.
    unsafe { libc::kill(porter, libc::SIGTERM) };
    assert!(proc.wait_exit(20).is_some(), "porter did not stop");

    let root = dir.path().join("root").canonicalize().expect("root");
    let stored = files_under(&root);
    assert_eq!(stored.len(), 6, "{stored:?}");
    let trace = std::fs::read_to_string(&trace).expect("the whole trace");
    let calls = calls(&trace);
    for file in stored {
        let id = file.file_name().and_then(|n| n.to_str()).expect("a name");
        if let Err(e) = durable_before_told(&calls, &root, id) {
            panic!("{e}\n{trace}");
        }
    }
}
