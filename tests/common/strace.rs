//! Reading `strace -f` output: system calls in the order they completed, with
//! `<unfinished ...>` / `<... resumed>` pairs joined per thread.

use std::collections::HashMap;

/// A system call as strace reports it once it returned.
pub struct Call {
    pub name: String,
    pub args: String,
    pub result: String,
}

/// Joins `<unfinished ...>` / `<... resumed>` pairs (per pid) and returns calls in the order
/// they completed.
pub fn completed_calls(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in trace.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        let full = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_owned(), head.trim_end().to_owned());
            continue;
        } else if rest.starts_with("<...") {
            let Some(head) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{head}{tail}")
        } else {
            rest.to_owned()
        };
        let Some((name, after)) = full.split_once('(') else {
            continue;
        };
        let Some((lhs, result)) = after.rsplit_once(" = ") else {
            continue;
        };
        let Some(args) = lhs.trim_end().strip_suffix(')') else {
            continue;
        };
        calls.push(Call {
            name: name.trim().to_owned(),
            args: args.to_owned(),
            result: result.split_whitespace().next().unwrap_or("").to_owned(),
        });
    }
    calls
}
