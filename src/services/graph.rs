//! The dependency graph of a stack: each edge's condition as resolved
//! (the short form from the dependency's restart policy), the checks that
//! a file can run at all (no cycle, no condition that can never hold), the
//! start order shown by `--dry-run`, and which services a selection starts.

use crate::error::Error;
use crate::settings::{Restart, Settings};

use super::file::{Cond, Stack};

/// For each service, its dependencies as (index, condition).
pub type Edges = Vec<Vec<(usize, Cond)>>;

/// Resolves every edge's condition and refuses the impossible ones: a
/// service whose run never ends by itself never `succeeded`.
pub fn conditions(stack: &Stack, settings: &[Settings]) -> Result<Edges, Error> {
    let mut edges = Vec::new();
    for s in &stack.services {
        let mut mine = Vec::new();
        for d in &s.deps {
            let i = stack.index(&d.name).expect("checked by the file");
            let dep = &settings[i];
            let cond = d.cond.unwrap_or(if dep.restart == Restart::Always {
                Cond::Ready
            } else {
                Cond::Succeeded
            });
            let never_ends = dep.attempts == 0 && dep.restart != Restart::OnFailure;
            if cond == Cond::Succeeded && never_ends {
                return Err(Error::Config(format!(
                    "{}:{}: key 'depends-on' in [service.{}]: '{}' can never have succeeded: it restarts {} and forever (use \"started\" or \"ready\")",
                    stack.path.display(),
                    d.line,
                    s.name,
                    d.name,
                    dep.restart
                )));
            }
            mine.push((i, cond));
        }
        edges.push(mine);
    }
    Ok(edges)
}

/// Refuses a cycle, naming its path (`app -> migrate -> app`).
pub fn check_cycles(stack: &Stack) -> Result<(), Error> {
    // 0 unvisited, 1 on the current path, 2 done.
    let n = stack.services.len();
    let mut mark = vec![0u8; n];
    let mut path = Vec::new();
    fn visit(stack: &Stack, i: usize, mark: &mut [u8], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        mark[i] = 1;
        path.push(i);
        for d in &stack.services[i].deps {
            let j = stack.index(&d.name).expect("checked by the file");
            if mark[j] == 1 {
                let from = path.iter().position(|&p| p == j).expect("on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(j);
                return Some(cycle);
            }
            if mark[j] == 0 {
                if let Some(c) = visit(stack, j, mark, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        mark[i] = 2;
        None
    }
    for i in 0..n {
        if mark[i] == 0 {
            if let Some(cycle) = visit(stack, i, &mut mark, &mut path) {
                let names: Vec<&str> = cycle.iter().map(|&c| stack.services[c].name.as_str()).collect();
                let first = &stack.services[cycle[0]];
                let line = first
                    .deps
                    .iter()
                    .find(|d| d.name == names[1])
                    .map_or(first.line, |d| d.line);
                return Err(Error::Config(format!(
                    "{}:{line}: key 'depends-on' in [service.{}]: a dependency cycle: {}",
                    stack.path.display(),
                    first.name,
                    names.join(" -> ")
                )));
            }
        }
    }
    Ok(())
}

/// The services in an order that starts every dependency before its
/// dependents, the file's order among those free to go.
pub fn start_order(edges: &Edges, wanted: &[bool]) -> Vec<usize> {
    let n = edges.len();
    let mut done = vec![false; n];
    let mut order = Vec::new();
    while order.len() < wanted.iter().filter(|w| **w).count() {
        let next =
            (0..n).find(|&i| wanted[i] && !done[i] && edges[i].iter().all(|(d, _)| done[*d] || !wanted[*d]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => break,
        }
    }
    order
}

/// Which services run: the named ones (none named: every `autostart`
/// service) and everything they need, transitively.
pub fn select(stack: &Stack, names: &[String]) -> Result<Vec<bool>, Error> {
    let n = stack.services.len();
    let mut wanted = vec![false; n];
    let mut todo = Vec::new();
    if names.is_empty() {
        todo.extend((0..n).filter(|&i| stack.services[i].autostart));
    } else {
        for name in names {
            match stack.index(name) {
                Some(i) => todo.push(i),
                None => {
                    let known: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::Usage(format!(
                        "no service '{name}' in {} (services: {})",
                        stack.path.display(),
                        known.join(", ")
                    )));
                }
            }
        }
    }
    while let Some(i) = todo.pop() {
        if !wanted[i] {
            wanted[i] = true;
            for d in &stack.services[i].deps {
                todo.push(stack.index(&d.name).expect("checked by the file"));
            }
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn stack(text: &str) -> Stack {
        super::super::file::parse(Path::new("/s.toml"), text).unwrap()
    }

    #[test]
    fn a_cycle_is_named_with_its_path() {
        let s = stack(
            "[service.app]\ncommand=[\"x\"]\ndepends-on=[\"migrate\"]\n\
             [service.migrate]\ncommand=[\"x\"]\ndepends-on=[\"app\"]\n",
        );
        let e = check_cycles(&s).unwrap_err().to_string();
        assert!(
            e.contains("app -> migrate -> app") && e.starts_with("/s.toml:3:"),
            "{e}"
        );
    }

    #[test]
    fn order_and_selection() {
        let s = stack(
            "[service.app]\ncommand=[\"x\"]\ndepends-on=[\"db\"]\n\
             [service.db]\ncommand=[\"x\"]\nautostart=false\n[service.tool]\ncommand=[\"x\"]\nautostart=false\n",
        );
        check_cycles(&s).unwrap();
        let settings = vec![Settings::default(); 3];
        let edges = conditions(&s, &settings).unwrap();
        assert_eq!(edges[0], vec![(1, Cond::Succeeded)]);
        let all = select(&s, &[]).unwrap();
        assert_eq!(all, vec![true, true, false]);
        assert_eq!(start_order(&edges, &all), vec![1, 0]);
        assert_eq!(select(&s, &["tool".into()]).unwrap(), vec![false, false, true]);
        assert!(select(&s, &["nope".into()]).is_err());
    }
}
