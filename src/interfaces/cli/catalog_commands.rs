//! `forkline run …` and `forkline keys …`: the catalog and key verbs.

use std::sync::Arc;

use super::{KeysCommand, ProjectCommand, RunCommand, parse_config};
use crate::catalog::{ForkRequest, NewRun, Run, RunStatus, RunUpdate};
use crate::engine::Engine;
use crate::error::Result;
use crate::scope::Scope;

pub(super) async fn keys_command(engine: &Engine, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            project,
            read_only,
            can_delete,
        } => {
            let projects = crate::scope::Projects::from_patterns(&project)?;
            let access = crate::auth::Access {
                read_only,
                can_delete,
            };
            let (key, id) = crate::auth::create_key(engine, &projects, access).await?;
            println!("{key}");
            eprintln!(
                "key {id} for {}{}{} created; it is shown only once",
                projects.describe(),
                if read_only { ", read-only" } else { "" },
                if can_delete { ", may delete" } else { "" }
            );
        }
        KeysCommand::List => {
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
            };
            println!("id\tscope\taccess\tcreated\tlast_used\trevoked");
            for k in crate::auth::list_keys(engine).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.projects.describe(),
                    match (k.read_only, k.can_delete) {
                        (true, _) => "read-only",
                        (false, true) => "read-write-delete",
                        (false, false) => "read-write",
                    },
                    when(Some(k.created_at)),
                    when(k.last_used),
                    when(k.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let id = crate::auth::revoke_key(engine, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

pub(super) async fn run_command(engine: &Engine, cmd: RunCommand) -> Result<()> {
    let run = match cmd {
        RunCommand::Create {
            project,
            name,
            config,
            tags,
        } => {
            engine
                .create_run(NewRun {
                    project,
                    name,
                    config: parse_config(config.as_deref())?,
                    tags,
                    external_id: None,
                })
                .await?
        }
        RunCommand::Fork {
            run,
            step,
            name,
            config,
            no_inherit_config,
            inherit_tags,
            tags,
        } => {
            let mut req = ForkRequest::new(run, step);
            req.name = name;
            req.config = parse_config(config.as_deref())?;
            req.inherit_config = !no_inherit_config;
            req.inherit_tags = inherit_tags;
            req.tags = tags;
            let fork = engine.fork_run(req).await?;
            println!(
                "id={} display_id={} parent_id={} parent_display_id={} fork_step={}",
                fork.run.id,
                fork.run.display_id,
                fork.parent.id,
                fork.parent.display_id,
                fork.fork_step
            );
            return Ok(());
        }
        RunCommand::Status { run, status } => {
            let status: RunStatus = status.parse()?;
            engine.update_run(&run, RunUpdate::Status(status)).await?
        }
        RunCommand::Resume { run } => engine.update_run(&run, RunUpdate::Resume).await?,
        RunCommand::Config { run, config } => {
            engine
                .update_run(&run, RunUpdate::MergeConfig(parse_config(Some(&config))?))
                .await?
        }
        RunCommand::Delete { runs, cascade } => {
            let gone = engine
                .delete_runs(runs, cascade, &Scope::unrestricted())
                .await?;
            print_deleted(&gone);
            return Ok(());
        }
        RunCommand::Tag { run, add, remove } => {
            if !add.is_empty() {
                engine.update_run(&run, RunUpdate::AddTags(add)).await?;
            }
            engine
                .update_run(&run, RunUpdate::RemoveTags(remove))
                .await?
        }
    };
    println!(
        "id={} display_id={} project={} status={}",
        run.id, run.display_id, run.project, run.status
    );
    Ok(())
}

pub(super) async fn project_command(engine: &Engine, cmd: ProjectCommand) -> Result<()> {
    match cmd {
        ProjectCommand::Delete { name } => {
            let gone = engine.delete_project(&name, &Scope::unrestricted()).await?;
            print_deleted(&gone);
        }
    }
    Ok(())
}

/// A line per deleted run, as `run create` prints a run.
fn print_deleted(runs: &[Arc<Run>]) {
    for run in runs {
        println!(
            "deleted id={} display_id={} project={}",
            run.id, run.display_id, run.project
        );
    }
}
