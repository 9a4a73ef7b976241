//! Reading statements from standard input, with a prompt when it is a terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;

/// Split standard input into statements at `;` outside quotes.
pub fn read_statements(mut on_statement: impl FnMut(&str) -> bool) -> Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut buf = String::new();
    let prompt = |cont: bool| {
        if interactive {
            eprint!("{}", if cont { "   ...> " } else { "marrow> " });
            let _ = std::io::stderr().flush();
        }
    };
    prompt(false);
    for line in stdin.lock().lines() {
        let line = line?;
        buf.push_str(&line);
        buf.push('\n');
        let (mut in_single, mut in_double) = (false, false);
        let mut last_end = 0;
        let chars: Vec<(usize, char)> = buf.char_indices().collect();
        for (i, c) in chars {
            match c {
                '\'' if !in_double => in_single = !in_single,
                '"' if !in_single => in_double = !in_double,
                ';' if !in_single && !in_double => {
                    let stmt = buf[last_end..i].trim().to_string();
                    last_end = i + 1;
                    if !stmt.is_empty() && !on_statement(&stmt) {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        buf = buf[last_end..].to_string();
        prompt(!buf.trim().is_empty());
    }
    let rest = buf.trim();
    if !rest.is_empty() {
        on_statement(rest);
    }
    Ok(())
}
