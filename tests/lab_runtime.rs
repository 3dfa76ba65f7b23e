//! Lab tier: flint as podman's and containerd's OCI runtime, with Debian's podman, conmon and
//! containerd in the lab (`resources/lab/run --with-containers`) and a probe image imported
//! offline (`podman import` of the default bundle's busybox root). The same `podman run` must
//! give the same stdout, stderr and exit code with `--runtime crun` and `--runtime flint`;
//! detached containers stop, are inspected, copied from and removed as with crun; a volume is
//! shared both ways; `ctr run --runc-binary flint` runs the image too. One lab boot runs every
//! scenario; every wait in it is bounded.

mod common;

use std::sync::OnceLock;

use common::{base64, has_line, value, LabResults};

/// What the probe image's /probe.sh shows of what the runtime gave the process.
const PROBE: &str = r#"#!/bin/sh
echo "args: $0 $*"
echo "cwd: $(pwd)"
echo "greeting: $GREETING"
echo "pid: $$"
echo "uid: $(id -u) gid: $(id -g) groups: $(id -G)"
echo "hostname: $(hostname)"
env | sort
echo "--- /etc/hostname"; cat /etc/hostname
echo "--- /etc/hosts"; cat /etc/hosts
echo "--- /run/.containerenv: $([ -f /run/.containerenv ] && echo present)"
echo "--- /dev/shm: $(awk '$2 == "/dev/shm" { print $3 }' /proc/mounts)"
if read -r line; then echo "stdin: $line"; else echo "stdin: at its end"; fi
touch /tmp/written && echo "root writable: yes"
echo "to stderr" >&2
exit 3
"#;

/// Shell functions every scenario sources.
const LIB: &str = r#"
# prun NAME RUNTIME PODMAN-RUN-ARGS...: podman run with stdin from /tmp/typed; prints its
# stdout, stderr and exit code.
prun() {
    name=$1 rt=$2; shift 2
    podman --runtime "$rt" run "$@" </tmp/typed >/tmp/$name.out 2>/tmp/$name.err; code=$?
    echo "--- stdout"; cat /tmp/$name.out
    echo "--- stderr"; cat /tmp/$name.err
    echo "--- code $code"
}
# wait_log ID TEXT: until the container's log has TEXT (60 s at most, by the clock: one
# `podman logs` takes about a second in the lab, so counting tries would wait ten minutes).
wait_log() {
    end=$(($(date +%s) + 60))
    until podman logs "$1" 2>/dev/null | grep -q "$2" || [ "$(date +%s)" -ge $end ]; do sleep 0.1; done
}
left() { echo "left under the runtime root: $(ls -A /run/flint 2>/dev/null | wc -l)"; }
"#;

fn setup() -> String {
    format!(
        r#"mkdir -p /run /var/tmp; export TMPDIR=/var/tmp
printf '%s' {lib} | base64 -d > /tmp/lib.sh
rm -rf /tmp/img && cp -a /guest/bundle/rootfs /tmp/img && mkdir -p /tmp/img/tmp
printf '%s' {probe} | base64 -d > /tmp/img/probe.sh && chmod 755 /tmp/img/probe.sh
tar -C /tmp/img -cf /tmp/probe.tar . && podman import -q /tmp/probe.tar localhost/probe >/dev/null \
    && echo "probe image imported"
printf 'a typed line\nand more\n' > /tmp/typed
"#,
        lib = base64(LIB.as_bytes()),
        probe = base64(PROBE.as_bytes()),
    )
}

/// `podman run` of the probe with `runtime`: every option the issue names.
fn probe(runtime: &str) -> String {
    format!(
        ". /tmp/lib.sh; prun probe-{runtime} {runtime} --rm -i --network none --hostname probe \
         --name probe -e GREETING=hello -w /tmp localhost/probe /probe.sh one 'two three'"
    )
}

/// As another user with an extra group, stdin not given (-i absent).
fn user(runtime: &str) -> String {
    format!(
        ". /tmp/lib.sh; prun user-{runtime} {runtime} --rm --network none --hostname probe \
         --name user -u 1000:1001 --group-add 1002 localhost/probe /probe.sh"
    )
}

/// A terminal (-t): the workload's stdio is a tty.
fn tty(runtime: &str) -> String {
    format!(
        ". /tmp/lib.sh; prun tty-{runtime} {runtime} --rm -t --network none localhost/probe \
         sh -c 'test -t 0 && echo stdin is a tty; test -t 1 && echo stdout is a tty; exit 5'"
    )
}

/// A user's terminal (the lab's `ptyrun`, 40 x 100) around `podman run -t`: the workload's
/// terminal has its size, and Ctrl-C typed on it reaches the workload as SIGINT.
fn terminal(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
wait_size='i=0; while [ "$(stty size)" = "0 0" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; stty size'
echo "size: $(ptyrun 40 100 podman --runtime {runtime} run --rm -t --network none localhost/probe sh -c "$wait_size" </dev/null | tr -d '\r')"
rm -f /tmp/cc-{runtime}.in && mkfifo /tmp/cc-{runtime}.in
ptyrun 40 100 podman --runtime {runtime} run --rm -it --network none localhost/probe \
    sh -c 'trap "echo got INT; exit 9" INT; echo ready; while :; do sleep 0.1; done' \
    </tmp/cc-{runtime}.in >/tmp/cc-{runtime}.out 2>&1 & p=$!
exec 3>/tmp/cc-{runtime}.in
i=0; until grep -q ready /tmp/cc-{runtime}.out || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done
printf '\003' >&3
wait $p; echo "ctrl-c exit: $?"
exec 3>&-
echo "ctrl-c: $(tr -d '\r' < /tmp/cc-{runtime}.out | grep -c 'got INT')"
left"#
    )
}

/// Job control on the workload's terminal: an interactive shell (`sh -i` under the lab's
/// `ptyrun`) stops a foreground job with Ctrl-Z, lists it, brings it back with `fg`, and
/// Ctrl-C ends that job, not the shell.
fn job_control(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
rm -f /tmp/jc-{runtime}.in && mkfifo /tmp/jc-{runtime}.in
timeout 300 ptyrun 40 100 podman --runtime {runtime} run --rm -it --network none localhost/probe sh -i \
    </tmp/jc-{runtime}.in >/tmp/jc-{runtime}.out 2>&1 & p=$!
exec 3>/tmp/jc-{runtime}.in
# Typed once the shell is up (its banner), then each key after the one before has acted.
until_seen() {{ i=0; until tr -d '\r' </tmp/jc-{runtime}.out | grep -q "$1" || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done; }}
until_seen 'built-in shell'
printf 'echo "up"\n' >&3; until_seen '^up'
printf 'sleep 100\n' >&3; sleep 2
printf '\032' >&3; until_seen 'Stopped'
printf 'jobs\n' >&3; sleep 1
printf 'fg\n' >&3; sleep 2
printf '\003' >&3; sleep 1
printf 'echo "after fg and ctrl-c: $?"; exit 4\n' >&3
wait $p; echo "exit: $?"
exec 3>&-
tr -d '\r' </tmp/jc-{runtime}.out | sed 's/\x1b\[6n//g' | grep -E 'Stopped|^after fg'
left"#
    )
}

/// A stopped container started again (`podman start -a`): it sees what its first run wrote
/// to its root; and `podman commit` of it makes an image holding that.
fn restart(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
id=$(podman --runtime {runtime} run -d --network none localhost/probe sh -c 'echo run >> /count; echo "runs: $(wc -l < /count)"')
[ -n "$id" ] || {{ echo "podman run -d failed"; exit 1; }}
echo "first exit: $(timeout 120 podman wait $id)"
echo "first logs: $(podman logs $id | tr '\n' ' ')"
timeout 300 podman start -a $id; echo "start: $?"
echo "logs after start: $(podman logs $id | tr '\n' ' ')"
timeout 300 podman commit -q $id localhost/committed-{runtime} >/dev/null; echo "commit: $?"
echo "in the image: $(timeout 300 podman --runtime {runtime} run --rm --network none localhost/committed-{runtime} cat /count | tr '\n' ' ')"
podman rm $id >/dev/null && echo "rm: ok"
podman rmi localhost/committed-{runtime} >/dev/null && echo "rmi: ok"
left"#
    )
}

/// -d, then ps/inspect while it runs, stop (SIGTERM reaches the workload), cp and diff of
/// what it wrote, rm; and a second one ended by `podman kill`.
fn detached(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
id=$(podman --runtime {runtime} run -d --network none --cpu-shares 512 localhost/probe sh -c 'trap "echo got TERM; exit 7" TERM; echo data > /written; echo started; while :; do sleep 0.1; done')
[ -n "$id" ] || {{ echo "podman run -d failed"; exit 1; }}
wait_log $id started
echo "logs: $(podman logs $id | tr '\n' ' ')"
echo "status: $(podman inspect -f '{{{{.State.Status}}}}' $id)"
pid=$(podman inspect -f '{{{{.State.Pid}}}}' $id)
echo "pid is the runtime's process: $(cat /proc/$pid/comm)"
echo "in the container's cgroup: $(grep -c "libpod-$id" /proc/$pid/cgroup)"
echo "cpu.weight: $(cat /sys/fs/cgroup$(awk -F: '$1 == 0 {{ print $3 }}' /proc/$pid/cgroup)/cpu.weight)"
echo "listed: $(podman ps -q --no-trunc | grep -c $id)"
podman stop -t 20 $id >/dev/null; echo "stop: $?"
echo "exit code: $(podman inspect -f '{{{{.State.ExitCode}}}}' $id)"
echo "status after: $(podman inspect -f '{{{{.State.Status}}}}' $id)"
echo "logs after: $(podman logs $id | tr '\n' ' ')"
podman cp $id:/written /tmp/copied-{runtime} && echo "cp: $(cat /tmp/copied-{runtime})"
echo "diff: $(podman diff $id | grep written)"
podman rm $id >/dev/null && echo "rm: ok"
id=$(podman --runtime {runtime} run -d --network none localhost/probe sh -c 'echo started; exec sleep 1000')
[ -n "$id" ] || {{ echo "podman run -d failed"; exit 1; }}
wait_log $id started
podman kill $id >/dev/null; echo "kill: $?"
podman wait $id >/dev/null
echo "killed exit code: $(podman inspect -f '{{{{.State.ExitCode}}}}' $id)"
podman rm $id >/dev/null && echo "rm: ok"
left"#
    )
}

/// `podman exec` into a running container: plain (its stdout, stderr, exit code), `-i` with
/// piped input, `-t`, as another user, in another directory, and a program that is missing.
fn exec(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
id=$(podman --runtime {runtime} run -d --network none localhost/probe sh -c 'trap "exit 0" TERM; echo started; while :; do sleep 0.1; done')
[ -n "$id" ] || {{ echo "podman run -d failed"; exit 1; }}
wait_log $id started
podman exec $id sh -c 'echo exec-out; echo exec-err >&2; exit 4' >/tmp/e.out 2>/tmp/e.err; echo "exec code: $?"
echo "exec stdout: $(cat /tmp/e.out)"
echo "exec stderr: $(cat /tmp/e.err)"
echo "exec -i: $(printf 'piped\nin\n' | podman exec -i $id cat | tr '\n' ' ')"
podman exec -t $id sh -c 'test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; exit 6' >/tmp/t.out; echo "exec -t code: $?"
echo "exec -t: $(tr -d '\r' </tmp/t.out | tr '\n' ' ')"
echo "exec -u: $(podman exec -u 1000:1001 $id sh -c 'echo $(id -u) $(id -g)')"
echo "exec -w: $(podman exec -w /tmp $id pwd)"
podman exec $id /no/such >/dev/null 2>&1; echo "missing code: $?"
podman stop -t 20 $id >/dev/null; echo "exit code: $(podman inspect -f '{{{{.State.ExitCode}}}}' $id)"
podman rm $id >/dev/null && echo "rm: ok"
left"#
    )
}

/// A host directory as a volume, read and written from both sides.
fn volume(runtime: &str) -> String {
    format!(
        r#". /tmp/lib.sh
rm -rf /tmp/vol-{runtime} && mkdir -p /tmp/vol-{runtime} && echo from-host > /tmp/vol-{runtime}/in.txt
prun volume-{runtime} {runtime} --rm --network none -v /tmp/vol-{runtime}:/vol localhost/probe \
    sh -c 'cat /vol/in.txt; echo from-container > /vol/out.txt && echo written'
echo "host sees: $(cat /tmp/vol-{runtime}/out.txt)"
left"#
    )
}

/// podman's networks: a web server published with `-p` (fetched from the lab host through the
/// port, and directly at the container's address), the container's own address and routes,
/// and two containers on one user-defined network reaching each other. (httpd as PID 1 has no
/// TERM handler: `stop -t 2` kills it soon, with crun as with flint.)
fn network(runtime: &str, port: u16) -> String {
    format!(
        r#". /tmp/lib.sh
web='mkdir -p /www && echo "served by $0" > /www/index.html && echo started && exec httpd -f -p 80 -h /www'
id=$(podman --runtime {runtime} run -d -p {port}:80 localhost/probe sh -c "$web" {runtime})
[ -n "$id" ] || {{ echo "podman run -d -p failed"; exit 1; }}
wait_log $id started
ip=$(podman inspect -f '{{{{.NetworkSettings.IPAddress}}}}' $id)
echo "address: $ip"
echo "through the port: $(timeout 60 wget -q -O - http://127.0.0.1:{port}/)"
echo "through the bridge: $(timeout 60 wget -q -O - http://$ip:80/)"
podman exec $id ip -4 addr show eth0 | awk '/inet / {{ print "inside: " $2 }}'
podman exec $id ip route | awk '/^default/ {{ print "default route: " $1, $2, $3 }}'
podman stop -t 2 $id >/dev/null; podman rm $id >/dev/null && echo "rm: ok"
podman network create --disable-dns net-{runtime} >/dev/null && echo "network created"
a=$(podman --runtime {runtime} run -d --network net-{runtime} localhost/probe sh -c "$web" peer-a)
wait_log $a started
aip=$(podman inspect -f '{{{{(index .NetworkSettings.Networks "net-{runtime}").IPAddress}}}}' $a)
echo "peer answers: $(podman --runtime {runtime} run --rm --network net-{runtime} localhost/probe timeout 60 wget -q -O - http://$aip/)"
podman stop -t 2 $a >/dev/null; podman rm $a >/dev/null && echo "rm: ok"
podman network rm net-{runtime} >/dev/null && echo "network removed"
left"#
    )
}

/// A config field flint refuses: podman shows flint's one-line error.
fn refused() -> String {
    ". /tmp/lib.sh; prun refused flint --rm --network none --device /dev/null:/dev/mynull \
     localhost/probe true; left"
        .to_string()
}

/// containerd's runc shim driving flint: `ctr run --runc-binary`.
fn ctr() -> String {
    r#". /tmp/lib.sh
containerd >/tmp/containerd.log 2>&1 &
i=0; until [ -S /run/containerd/containerd.sock ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
podman save -q --format oci-archive -o /tmp/probe-oci.tar localhost/probe
ctr images import --snapshotter native --base-name localhost/probe /tmp/probe-oci.tar >/dev/null 2>&1 \
    || ctr images import --snapshotter native --index-name localhost/probe:latest /tmp/probe-oci.tar
ctr images ls -q
for rt in runc flint; do
    bin=$(command -v $rt || echo /usr/local/bin/$rt)
    [ $rt = runc ] && bin=/usr/bin/crun
    timeout 300 ctr run --rm --snapshotter native --runc-binary $bin localhost/probe:latest c-$rt \
        sh -c 'echo "args: $0 $*"; id; pwd; echo err >&2; exit 3' one two </dev/null \
        >/tmp/ctr-$rt.out 2>/tmp/ctr-$rt.err
    echo "ctr $rt exit: $?"
    echo "--- stdout $rt"; cat /tmp/ctr-$rt.out; echo "--- stderr $rt"; cat /tmp/ctr-$rt.err
done
left"#
        .to_string()
}

fn lab() -> &'static LabResults {
    static RESULTS: OnceLock<LabResults> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let mut list = Vec::new();
        for rt in ["crun", "flint"] {
            list.push((format!("probe-{rt}"), probe(rt)));
            list.push((format!("user-{rt}"), user(rt)));
            list.push((format!("tty-{rt}"), tty(rt)));
            list.push((format!("terminal-{rt}"), terminal(rt)));
            list.push((format!("job-control-{rt}"), job_control(rt)));
            list.push((format!("detached-{rt}"), detached(rt)));
            list.push((format!("exec-{rt}"), exec(rt)));
            list.push((format!("volume-{rt}"), volume(rt)));
            list.push((format!("restart-{rt}"), restart(rt)));
        }
        list.push(("network-crun".to_string(), network("crun", 8080)));
        list.push(("network-flint".to_string(), network("flint", 8081)));
        list.push(("refused".to_string(), refused()));
        list.push(("ctr".to_string(), ctr()));
        common::run_scenarios_in_lab(&setup(), &list, 600, &["--with-containers".to_string()])
    })
}

fn scenario(name: &str) -> &'static str {
    common::succeeded(lab(), name)
}

/// The part of a `prun` output between `--- NAME` and the next `--- ` line; for `code`, the
/// status on its `--- code N` line.
fn part<'a>(out: &'a str, name: &str) -> &'a str {
    if name == "code" {
        return value(out, "--- code ").unwrap_or_else(|| panic!("no code in:\n{out}"));
    }
    let start = out
        .find(&format!("--- {name}\n"))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
    let rest = &out[start + name.len() + 5..];
    &rest[..rest.find("\n--- ").map_or(rest.len(), |e| e + 1)]
}

/// crun's and flint's runs of one scenario: the same stdout, stderr and exit code.
fn same_as_crun(name: &str) -> &'static str {
    let crun = scenario(&format!("{name}-crun"));
    let flint = scenario(&format!("{name}-flint"));
    for p in ["stdout", "stderr", "code"] {
        assert_eq!(
            part(flint, p),
            part(crun, p),
            "{name}: {p} differs\n=== crun:\n{crun}\n=== flint:\n{flint}"
        );
    }
    flint
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn podman_run_gives_what_crun_gives() {
    let out = same_as_crun("probe");
    assert!(has_line(out, "args: /probe.sh one two three"), "{out}");
    assert!(has_line(out, "cwd: /tmp"), "{out}");
    assert!(has_line(out, "greeting: hello"), "{out}");
    assert!(has_line(out, "hostname: probe"), "{out}");
    assert!(has_line(out, "stdin: a typed line"), "{out}");
    assert_eq!(part(out, "code"), "3", "{out}");
    assert_eq!(part(out, "stderr"), "to stderr\n", "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn podman_run_as_another_user_gives_what_crun_gives() {
    let out = same_as_crun("user");
    assert!(
        has_line(out, "uid: 1000 gid: 1001 groups: 1001 1002"),
        "{out}"
    );
    assert!(has_line(out, "stdin: at its end"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn podman_run_with_a_terminal_gives_what_crun_gives() {
    let out = same_as_crun("tty");
    assert!(out.contains("stdin is a tty"), "{out}");
    assert!(out.contains("stdout is a tty"), "{out}");
    assert_eq!(part(out, "code"), "5", "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_terminal_has_the_users_size_and_ctrl_c_reaches_the_workload() {
    for rt in ["crun", "flint"] {
        let out = scenario(&format!("terminal-{rt}"));
        for line in [
            "size: 40 100",
            "ctrl-c exit: 9",
            "ctrl-c: 1",
            "left under the runtime root: 0",
        ] {
            assert!(has_line(out, line), "{rt}: {line}\n{out}");
        }
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn job_control_on_the_terminal_works_as_with_crun() {
    // Each on its own: where the terminal echoes typed-ahead keys may differ.
    for rt in ["crun", "flint"] {
        let out = scenario(&format!("job-control-{rt}"));
        let stopped = "[1]+  Stopped                    sleep 100";
        assert_eq!(
            out.lines().filter(|l| l.ends_with(stopped)).count(),
            2,
            "{rt}: Ctrl-Z stopped it and jobs listed it:\n{out}"
        );
        for line in [
            "after fg and ctrl-c: 130",
            "exit: 4",
            "left under the runtime root: 0",
        ] {
            assert!(has_line(out, line), "{rt}: {line}\n{out}");
        }
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_stopped_container_restarts_and_commits_what_it_wrote_as_with_crun() {
    let crun = scenario("restart-crun");
    let out = scenario("restart-flint");
    assert_eq!(out, crun, "flint differs from crun");
    for line in [
        "first exit: 0",
        "first logs: runs: 1 ",
        "runs: 2",
        "start: 0",
        "logs after start: runs: 1 runs: 2 ",
        "commit: 0",
        "in the image: run run ",
        "rm: ok",
        "rmi: ok",
        "left under the runtime root: 0",
    ] {
        assert!(has_line(out, line), "{line}\n{out}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_detached_container_stops_copies_and_is_removed_as_with_crun() {
    let crun = scenario("detached-crun");
    let out = scenario("detached-flint");
    for line in [
        "logs: started ",
        "status: running",
        "listed: 1",
        "in the container's cgroup: 1",
        "stop: 0",
        // SIGTERM reached the workload, whose trap answered.
        "exit code: 7",
        "status after: exited",
        "logs after: started got TERM ",
        "cp: data",
        "diff: A /written",
        "rm: ok",
        "kill: 0",
        "killed exit code: 137",
        "left under the runtime root: 0",
    ] {
        assert!(has_line(crun, line), "crun: {line}\n{crun}");
        assert!(has_line(out, line), "flint: {line}\n{out}");
    }
    assert!(
        has_line(out, "pid is the runtime's process: flint"),
        "{out}"
    );
    // --cpu-shares 512 as cgroup v2's weight, converted as runc converts it.
    assert!(has_line(out, "cpu.weight: 20"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn podman_exec_runs_a_second_process_as_with_crun() {
    let crun = scenario("exec-crun");
    let out = scenario("exec-flint");
    for line in [
        "exec code: 4",
        "exec stdout: exec-out",
        "exec stderr: exec-err",
        "exec -i: piped in ",
        "exec -t code: 6",
        "exec -t: stdin-tty stdout-tty ",
        "exec -u: 1000 1001",
        "exec -w: /tmp",
        "missing code: 127",
        "exit code: 0",
        "rm: ok",
        "left under the runtime root: 0",
    ] {
        assert!(has_line(crun, line), "crun: {line}\n{crun}");
        assert!(has_line(out, line), "flint: {line}\n{out}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_volume_is_shared_both_ways() {
    let out = same_as_crun("volume");
    assert!(has_line(out, "from-host"), "{out}");
    assert!(has_line(out, "written"), "{out}");
    assert!(has_line(out, "host sees: from-container"), "{out}");
    assert!(has_line(out, "left under the runtime root: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn podman_networks_reach_the_vm_as_they_reach_crun() {
    let crun = scenario("network-crun");
    let out = scenario("network-flint");
    for (rt, text) in [("crun", crun), ("flint", out)] {
        let ip = value(text, "address: ").unwrap_or_else(|| panic!("{rt}: no address\n{text}"));
        assert!(ip.starts_with("10.88."), "{rt}: {text}");
        for line in [
            format!("through the port: served by {rt}"),
            format!("through the bridge: served by {rt}"),
            "default route: default via 10.88.0.1".to_string(),
            "rm: ok".to_string(),
            "network created".to_string(),
            "peer answers: served by peer-a".to_string(),
            "network removed".to_string(),
            "left under the runtime root: 0".to_string(),
        ] {
            assert!(has_line(text, &line), "{rt}: {line}\n{text}");
        }
        // The guest has the address podman gave the container's veth.
        assert!(has_line(text, &format!("inside: {ip}/16")), "{rt}: {text}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn a_refused_field_is_one_line_podman_shows() {
    let out = scenario("refused");
    let stderr = part(out, "stderr");
    assert_eq!(stderr.lines().count(), 1, "{out}");
    assert!(stderr.contains("linux.devices"), "{out}");
    assert_ne!(part(out, "code"), "0", "{out}");
    assert!(has_line(out, "left under the runtime root: 0"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab (minutes); run with --include-ignored"]
fn containerd_runs_the_image_through_flint_as_through_crun() {
    let out = scenario("ctr");
    assert!(has_line(out, "ctr runc exit: 3"), "{out}");
    assert!(has_line(out, "ctr flint exit: 3"), "{out}");
    let section = |rt: &str, what: &str| {
        let start = out.find(&format!("--- {what} {rt}\n")).unwrap();
        let rest = &out[start..];
        rest[rest.find('\n').unwrap() + 1..]
            .split("\n--- ")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        section("flint", "stdout"),
        section("runc", "stdout"),
        "{out}"
    );
    assert!(has_line(out, "left under the runtime root: 0"), "{out}");
}
