//! `serve-repo`: the real binary serving a directory append-only, and the real binary as its
//! client through `-r http://127.0.0.1:PORT/`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::util::{Env, noise};

/// A running `tidemark serve-repo`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Serve `env.repo` (a directory) on a free port with `flags`; returns once it listens.
    fn start(env: &Env, flags: &[&str]) -> Server {
        let mut args = vec!["serve-repo", "--listen", "127.0.0.1:0", "--path", &env.repo];
        args.extend(flags);
        let log = fs::File::create(env.path("serve-repo.log")).unwrap();
        let mut child = env.command(args).stdout(Stdio::piped()).stderr(log).spawn().expect("start serve-repo");
        // The first line names the address, printed once the socket listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                panic!("no URL in {line:?}: {}", fs::read_to_string(env.path("serve-repo.log")).unwrap())
            })
            .to_string();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every object of the served directory but the locks, with sizes.
fn objects_but_locks(env: &Env) -> Vec<(std::path::PathBuf, u64)> {
    env.objects("").into_iter().filter(|(p, _)| !p.to_string_lossy().contains("/locks/")).collect()
}

#[test]
fn append_only_server_takes_backups_and_refuses_forget_while_prune_on_its_disk_works() {
    let mut env = Env::new();
    fs::create_dir_all(&env.repo).unwrap();
    let token = env.write("client.token", "client-secret\n").to_string_lossy().into_owned();
    let admin = env.write("admin.token", "admin-secret\n").to_string_lossy().into_owned();
    let server = Server::start(&env, &["--append-only", "--token-file", &token, "--admin-token-file", &admin]);
    let url = server.url.clone();

    // Without the token: refused, with the fix in the message.
    let run = env.run(["-r", &url, "init"]).expect(1);
    assert!(run.stderr.contains("401") && run.stderr.contains("bearer token"), "{}", run.stderr);
    env.vars.push(("TIDEMARK_REPO_TOKEN".into(), "client-secret".into()));

    env.ok(["-r", &url, "init"]);
    env.write("src/notes.txt", "first");
    env.write("src/data.bin", noise(1, 600 * 1024));
    let first = env.backup("src", &["-r", &url]);
    env.write("src/notes.txt", "second");
    env.write("src/data.bin", noise(2, 600 * 1024));
    let second = env.backup("src", &["-r", &url]);
    let listed = env.ok(["-r", &url, "snapshots", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    env.ok(["-r", &url, "restore", &first, "--target", &env.arg("out1")]);
    let out1 = env.restored("out1", &env.path("src"));
    assert_eq!(fs::read_to_string(out1.join("notes.txt")).unwrap(), "first");
    assert_eq!(fs::read(out1.join("data.bin")).unwrap(), noise(1, 600 * 1024));
    env.ok(["-r", &url, "check", "--read-data"]);

    // A stolen client credential cannot destroy backups: forget is refused, nothing is deleted,
    // and the failed command still released its lock.
    let before = objects_but_locks(&env);
    let run = env.run(["-r", &url, "forget", "--keep-last", "1", "--prune"]).expect(1);
    assert!(run.stderr.contains("403") && run.stderr.contains("append-only"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert_eq!(objects_but_locks(&env), before, "the refused forget deleted nothing");
    assert_eq!(env.objects("locks"), vec![], "the lock was released");
    let ids: Vec<String> = env
        .ok(["-r", &url, "snapshots", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![first.clone(), second.clone()]);
    let log = fs::read_to_string(env.path("serve-repo.log")).unwrap();
    assert!(log.contains("refused DELETE snapshots/"), "{log}");

    // On the server's own disk, forget and prune work.
    let data_before: u64 = env.objects("data").iter().map(|o| o.1).sum();
    let run = env.ok(["forget", "--keep-last", "1", "--prune"]);
    assert!(run.stdout.contains("removed 1 snapshot(s)"), "{}", run.stdout);
    let data_after: u64 = env.objects("data").iter().map(|o| o.1).sum();
    assert!(data_after < data_before, "prune freed data: {data_before} -> {data_after}");
    assert_eq!(env.snapshot_ids(), vec![second.clone()]);

    // Clients carry on through the server; the admin token may prune remotely.
    env.write("src/notes.txt", "third");
    let third = env.backup("src", &["-r", &url]);
    let admin_env = env.with_var("TIDEMARK_REPO_TOKEN", "admin-secret");
    admin_env.ok(["-r", &url, "forget", "--keep-last", "1", "--prune"]);
    assert_eq!(env.snapshot_ids(), vec![third]);
    env.ok(["-r", &url, "check", "--read-data"]);
    env.ok(["-r", &url, "restore", "latest", "--target", &env.arg("out3")]);
    let out3 = env.restored("out3", &env.path("src"));
    assert_eq!(fs::read_to_string(out3.join("notes.txt")).unwrap(), "third");
    drop(server);
}

#[test]
fn serve_repo_refuses_a_missing_directory_and_a_busy_port() {
    let env = Env::new();
    let run = env.run(["serve-repo", "--listen", "127.0.0.1:0", "--path", &env.arg("missing")]).expect(1);
    assert!(run.stderr.contains("is not a directory") && run.stderr.contains("hint:"), "{}", run.stderr);
    fs::create_dir_all(&env.repo).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let run = env.run(["serve-repo", "--listen", &addr, "--path", &env.repo]).expect(1);
    assert!(run.stderr.contains("cannot listen on"), "{}", run.stderr);
}
