# bash completion for patiencectl(1)                       -*- shell-script -*-
# Verbs, their options, and service names read from the services file
# (-f FILE, else ./services.toml). Kept in step with `patiencectl --help`
# by tests/install.rs.

_patiencectl_verbs='up down start stop restart status ps logs wait check signal reset'

# _patiencectl_services FILE: the service names of a services file.
_patiencectl_services()
{
    [ -f "$1" ] || return
    sed -n 's/^[[:space:]]*\[service\.\([a-z0-9._-]*\)\][[:space:]]*\(#.*\)\{0,1\}$/\1/p' "$1"
}

_patiencectl()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local file=services.toml verb= i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            -f | --file) file=${COMP_WORDS[i + 1]}; ((i++)) ;;
            -s | --socket) ((i++)) ;;
            -*) ;;
            *) verb=${COMP_WORDS[i]}; break ;;
        esac
    done
    case $prev in
        -f | --file | -s | --socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        -t | --timeout | -n | --lines) return ;;
        --for)
            COMPREPLY=($(compgen -W 'ready succeeded' -- "$cur"))
            return
            ;;
    esac
    if [ -z "$verb" ]; then
        COMPREPLY=($(compgen -W "$_patiencectl_verbs -f --file -s --socket -h --help -V --version" -- "$cur"))
        return
    fi
    local options= names=yes
    case $verb in
        up) options='-d --detach' ;;
        down) options='-t --timeout'; names= ;;
        status | ps) options='--json'; names= ;;
        check) names= ;;
        logs) options='-f --follow -n --lines' ;;
        wait) options='-t --timeout --for' ;;
        signal)
            if [ "$prev" = signal ]; then
                COMPREPLY=($(compgen -W 'HUP INT TERM QUIT USR1 USR2 KILL' -- "$cur"))
                return
            fi
            ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    elif [ -n "$names" ]; then
        COMPREPLY=($(compgen -W "$(_patiencectl_services "$file")" -- "$cur"))
    fi
}

complete -F _patiencectl patiencectl
