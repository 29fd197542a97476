//! The option tables of `docs/operations.md` against the clap definitions, in
//! both directions:
//! every documented flag exists with its variable and default, and every
//! option of a documented group has its row.

use clap::{Arg, Command, CommandFactory};

use super::Cli;
use crate::options::{ConnectionArgs, GlobalArgs};

/// The page that holds the option tables, the limits table and the
/// config-file example.
fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows of the table whose header line starts with `header`, as cells.
fn table(doc: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "docs/operations.md has no table `{header}`"
    );
    lines
        .skip(1) // |---|---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `--name` of a `` `--name` `` cell.
fn flag(cell: &str) -> &str {
    cell.trim_matches('`')
}

/// The user-visible options of a command, not clap's own (`--help`, `--version`).
fn options(command: &Command) -> Vec<&Arg> {
    command
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect()
}

fn find<'a>(args: &[&'a Arg], cell: &str) -> &'a Arg {
    let name = flag(cell).trim_start_matches("--");
    args.iter()
        .copied()
        .find(|a| a.get_long() == Some(name))
        .unwrap_or_else(|| {
            panic!("docs/operations.md documents {cell}, which is not an option here")
        })
}

fn clap_default(arg: &Arg) -> Option<String> {
    // A switch gets its `false` when clap builds the command, which these
    // tests do not (that would copy the global options into every command).
    if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        return Some("false".into());
    }
    let values = arg.get_default_values();
    (!values.is_empty()).then(|| {
        values
            .iter()
            .map(|v| v.to_string_lossy())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// A documented default: clap's own where it has one (the cell starts with
/// it: `1024 per listener`), else words the flag's help gives as its default.
fn check_default(arg: &Arg, cell: &str) {
    let long = arg.get_long().unwrap_or_default();
    let cell = cell.trim_matches('`');
    match clap_default(arg) {
        Some(default) => assert!(
            cell == default || cell.starts_with(&format!("{default} ")),
            "docs/operations.md gives --{long} the default `{cell}`, clap `{default}`"
        ),
        None => {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                (cell == "none" && !help.contains("default"))
                    || help.contains(&format!("default: {cell}")),
                "docs/operations.md gives --{long} the default `{cell}`; its help: {help}"
            );
        }
    }
}

fn check_variable(arg: &Arg, cell: &str) {
    let env = arg.get_env().map(|e| format!("`{}`", e.to_string_lossy()));
    assert_eq!(
        env.as_deref().unwrap_or("—"),
        cell,
        "variable of --{}",
        arg.get_long().unwrap_or_default()
    );
}

/// Each documented flag as clap has it, and each option documented.
fn check_reference(header: &str, args: &[&Arg]) {
    let rows = table(&doc(), header);
    for row in &rows {
        let arg = find(args, &row[0]);
        check_variable(arg, &row[1]);
        check_default(arg, &row[2]);
    }
    for arg in args {
        let name = format!("`--{}`", arg.get_long().unwrap_or_default());
        assert!(
            rows.iter().any(|r| r[0] == name),
            "{name} has no row in the table `{header}` of docs/operations.md"
        );
    }
}

#[test]
fn global_options_table() {
    let command = Cli::command();
    check_reference("| global option |", &options(&command));
}

#[test]
fn serve_options_table() {
    let command = Cli::command();
    let serve = command.find_subcommand("serve").expect("serve");
    check_reference("| `forkline serve` option |", &options(serve));
}

#[test]
fn cluster_options_tables() {
    let command = Cli::command();
    for name in ["scheduler", "executor"] {
        let sub = command.find_subcommand(name).expect(name);
        check_reference(&format!("| `forkline {name}` option |"), &options(sub));
    }
}

/// The limits table documents exactly the query and connection groups.
#[test]
fn limits_table() {
    let rows = table(&doc(), "| `forkline serve` flag (variable `FORKLINE_…`) |");
    let group = <super::QueryArgs as clap::Args>::augment_args(Command::new("q"));
    let group = <ConnectionArgs as clap::Args>::augment_args(group);
    let args = options(&group);
    for row in &rows {
        let arg = find(&args, &row[0]);
        check_default(arg, &row[1]);
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let expected = format!("FORKLINE_{}", arg.get_id().as_str().to_uppercase());
        assert_eq!(env.as_deref(), Some(expected.as_str()), "{}", row[0]);
    }
    for arg in args {
        let name = format!("`--{}`", arg.get_long().unwrap_or_default());
        assert!(
            rows.iter().any(|r| r[0] == name),
            "{name}: no row in the limits table"
        );
    }
}

/// The example config file holds only keys the file may hold, with valid values.
#[test]
fn config_file_example() {
    let doc = doc();
    let start = doc
        .find("```toml\n")
        .expect("the config-file example of docs/operations.md")
        + 8;
    let end = start + doc[start..].find("```").expect("end of the example");
    let example: GlobalArgs = toml::from_str(&doc[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert!(example.store.starts_with("s3://"), "{example:?}");
}
