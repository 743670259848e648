//! `cargo run -p exercises --bin progress`: every exercise, by chapter, and whether it is solved.
//! `--list` only lists them (without running the checks).

use exercises::registry::{status, Status};
use exercises::EXERCISES;

fn main() {
    let list_only = std::env::args().any(|a| a == "--list");
    if !list_only {
        std::panic::set_hook(Box::new(|_| {})); // each check's panic is reported below instead
    }
    let answers = if cfg!(feature = "solutions") { "the reference answers (--features solutions)" } else { "yours" };
    println!("kvserve exercises: {} in chapters 1–5; answers checked: {answers}\n", EXERCISES.len());
    println!("{:<4} {:<22} {:<9} task", "ch.", "exercise", "status");
    let mut solved = 0;
    let mut next = None;
    for ex in EXERCISES {
        let (mark, detail) = if list_only {
            ("", None)
        } else {
            match status(ex) {
                Status::Solved => {
                    solved += 1;
                    ("solved", None)
                }
                Status::Todo(_) => ("todo", None),
                Status::Failed(msg) => ("FAILS", Some(msg)),
            }
        };
        println!("{:<4} {:<22} {:<9} {}", ex.chapter, ex.name, mark, ex.task);
        if let Some(msg) = detail {
            println!("{:37}↳ {}", "", msg.lines().next().unwrap_or_default());
        }
        if mark != "solved" && next.is_none() && !list_only {
            next = Some(ex);
        }
    }
    if list_only {
        println!("\nRun without --list to check your answers.");
        return;
    }
    println!("\nsolved {solved} of {}", EXERCISES.len());
    match next {
        Some(ex) => {
            println!("\nnext: chapter {}, `{}` — read {}, edit {},", ex.chapter, ex.name, ex.page, ex.file());
            println!("      then: cargo test -p exercises {} -- --include-ignored", ex.test());
        }
        None => println!("every exercise is solved."),
    }
}
