# Added by nixdeploy to clap's bash completions: after `run` and `check`, the names of the
# shipped runbooks as well as files; after `run RUNBOOK … --set`, that runbook's parameter names
# (read from `nixdeploy run RUNBOOK --help`, which compiles nothing and contacts no host).
_nixdeploy_runbooks() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local prev="${COMP_WORDS[COMP_CWORD-1]}"
    local sub="${COMP_WORDS[1]}"
    _nixdeploy "$@"
    case "$sub" in
        run | check) ;;
        *) return 0 ;;
    esac
    local runbook="" i word
    for ((i = 2; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "${COMP_WORDS[i-1]}" in
            --flake | --on | --lib | --parallel | --set) continue ;;
        esac
        if [[ "$word" != -* ]]; then
            runbook="$word"
            break
        fi
    done
    if [[ "$sub" == run && "$prev" == --set && -n "$runbook" ]]; then
        local params
        params=$("${COMP_WORDS[0]}" run "$runbook" --help 2>/dev/null |
            sed -n '/^Parameters/,$ s/^  \([A-Za-z0-9_][A-Za-z0-9_]*\) .*/\1=/p')
        COMPREPLY=($(compgen -W "$params" -- "$cur"))
        compopt -o nospace 2>/dev/null
        return 0
    fi
    case "$prev" in
        --flake | --on | --lib | --parallel | --set) return 0 ;;
    esac
    if [[ "$cur" != -* && ( -z "$runbook" || "$sub" == check ) ]]; then
        COMPREPLY+=($(compgen -W "@RUNBOOKS@" -- "$cur"))
    fi
    return 0
}
