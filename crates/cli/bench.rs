//! `romdelta bench`: the harness of `romdelta-bench`, fed from the arguments.

use crate::args::Command;
use crate::Failure;
use anyhow::Context as _;
use std::time::Duration;

/// Runs the harness for a `Command::Bench`; prints the table (or the JSON)
/// on standard output and progress on standard error.
pub fn run(command: Command) -> Result<(), Failure> {
    let Command::Bench {
        source,
        target,
        peers,
        out,
        timeout,
        threads,
        romdelta_args,
        keep_caches,
        json,
    } = command
    else {
        unreachable!("bench::run is only called for Command::Bench");
    };
    let romdelta = std::env::current_exe().context("finding the romdelta executable")?;
    let mut cfg = romdelta_bench::Config::new(romdelta, source, target);
    cfg.tools = romdelta_bench::Tool::parse_list(&peers).map_err(Failure::usage)?;
    cfg.out_dir = out;
    cfg.timeout = Duration::from_secs(timeout);
    cfg.threads = threads;
    cfg.romdelta_args = romdelta_args.split_whitespace().map(String::from).collect();
    cfg.drop_caches = !keep_caches;
    let report = romdelta_bench::run(&cfg, &mut |line| {
        if !crate::progress::quiet() {
            eprintln!("bench: {line}")
        }
    })?;
    let report = romdelta_bench::write_outputs(report, &cfg.out_dir)?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_markdown());
        eprintln!(
            "bench: wrote {0}/results.md, {0}/results.json and {0}/chart.png{1}",
            cfg.out_dir.display(),
            if report.chart_font.is_some() {
                ""
            } else {
                " (no font found: the chart has no text)"
            }
        );
    }
    Ok(())
}
