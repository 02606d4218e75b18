# bash completion for patience(1)                          -*- shell-script -*-
# Options until the command, then the command and its own completion (via
# bash-completion's _command_offset when it is loaded). Kept in step with
# `patience --help` by tests/install.rs.

_patience_options='-a --attempts --forever -t --timeout -s --signal -k --kill-after
 --deadline --stagger -d --delay -b --backoff --multiplier --max-delay --jitter --reset-after
 --restart --foreground --init --name --success-exit --retry-exit --stop-exit
 --success-pattern --failure-pattern --abort-pattern --retry-pattern --transient
 --match-stream --output --hold-output --stdin -q --quiet -v --verbose --color
 --summary --summary-json --textfile-dir --no-metrics --key --state-url --state-url-password-file --breaker --breaker-cooldown
 --rate-limit --max-concurrent --slot-wait --refused-exit -p --profile --config
 --no-config --services --dry-run --state --reset-state -h --help -V --version'

# _patience_valued WORD: true when option WORD takes a value (in the next
# word, or after `=`).
_patience_valued()
{
    case $1 in
        -a | --attempts | -t | --timeout | -s | --signal | -k | --kill-after | --deadline | \
            --stagger | -d | --delay | -b | --backoff | --multiplier | --max-delay | --jitter | \
            --reset-after | --restart | --name | --success-exit | --retry-exit | --stop-exit | \
            --success-pattern | --failure-pattern | --abort-pattern | --retry-pattern | \
            --match-stream | --output | --stdin | --color | --summary-json | --textfile-dir | --key | --state-url | --state-url-password-file | --breaker | \
            --breaker-cooldown | --rate-limit | --max-concurrent | --slot-wait | --refused-exit | \
            -p | --profile | --config | --state | --reset-state) return 0 ;;
    esac
    return 1
}

# _patience_values OPTION WORD: the values OPTION takes that start with WORD.
_patience_values()
{
    local values
    case $1 in
        -s | --signal) values='TERM INT HUP QUIT KILL USR1 USR2 ALRM 0 RTMIN RTMIN+1 RTMAX-1 RTMAX' ;;
        -b | --backoff) values='fixed linear exponential fibonacci jitter decorrelated-jitter' ;;
        --restart) values='on-failure always on-success' ;;
        --match-stream) values='stdout stderr both' ;;
        --output) values='live final failure' ;;
        --stdin) values='inherit replay null' ;;
        --color) values='auto always never' ;;
        --summary-json | --config | --services)
            COMPREPLY=($(compgen -f -- "$2"))
            return
            ;;
        --textfile-dir)
            COMPREPLY=($(compgen -d -- "$2"))
            return
            ;;
        *) values='' ;;
    esac
    COMPREPLY=($(compgen -W "$values" -- "$2"))
}

_patience()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local i=1 word cmd=0
    # Find where the command starts: options end at `--` or at the first
    # word that is neither an option nor an option's value. bash splits
    # `--opt=value` into `--opt`, `=`, `value`.
    while ((i < COMP_CWORD)); do
        word=${COMP_WORDS[i]}
        if [[ $word == -- ]]; then
            cmd=$((i + 1))
            break
        elif [[ $word != -?* ]]; then
            cmd=$i
            break
        elif _patience_valued "$word"; then
            [[ ${COMP_WORDS[i + 1]} == = ]] && ((i++))
            ((i++))
        fi
        ((i++))
    done
    if ((cmd > 0)); then
        if declare -F _command_offset >/dev/null; then
            _command_offset "$cmd"
        elif ((cmd == COMP_CWORD)); then
            COMPREPLY=($(compgen -c -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi
    # The value of an option: `--opt value`, `--opt=value` or `--opt=`.
    if [[ $cur == = ]] && _patience_valued "$prev"; then
        _patience_values "$prev" ''
        return
    elif [[ $prev == = ]] && _patience_valued "${COMP_WORDS[COMP_CWORD - 2]}"; then
        _patience_values "${COMP_WORDS[COMP_CWORD - 2]}" "$cur"
        return
    elif ((i > COMP_CWORD)); then
        _patience_values "$prev" "$cur"
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$_patience_options" -- "$cur"))
    else
        COMPREPLY=($(compgen -c -- "$cur"))
    fi
}

complete -F _patience patience
