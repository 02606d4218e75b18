# fish completion for patience(1): options until the command, then the
# command and its own completion. Kept in step with `patience --help` by
# tests/install.rs.

set -g __patience_valued -a --attempts -t --timeout -s --signal -k --kill-after --deadline --stagger \
    -d --delay -b --backoff --multiplier --max-delay --jitter --reset-after --restart --name \
    --success-exit --retry-exit --stop-exit --success-pattern --failure-pattern --abort-pattern \
    --retry-pattern --match-stream --output --stdin --color --summary-json --textfile-dir --key --state-url --state-url-password-file --breaker \
    --breaker-cooldown --rate-limit --max-concurrent --slot-wait --refused-exit -p --profile --config \
    --state --reset-state

# Prints the command line from the command on (the word being completed
# last), or fails while patience's own options are still being written.
function __patience_command
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l found 0
    while set -q tokens[1]
        switch $tokens[1]
            case --
                set -e tokens[1]
                set found 1
                break
            case '--*=*'
            case '-?*'
                contains -- $tokens[1] $__patience_valued; and set -e tokens[1]
            case '*'
                set found 1
                break
        end
        set -e tokens[1]
    end
    test $found = 1; or return 1
    string escape -- $tokens
    commandline -ct
end

function __patience_options
    not __patience_command >/dev/null
end

complete -c patience -f -n 'not __patience_options' -a '(complete --do-complete=(__patience_command | string join " "))'
complete -c patience -f -n '__patience_options; and not string match -q -- "-*" (commandline -ct)' -a '(__fish_complete_command)'

complete -c patience -n __patience_options -x -s a -l attempts -d 'maximum attempts, 0 = unlimited'
complete -c patience -n __patience_options -f -l forever -d 'same as --attempts 0'
complete -c patience -n __patience_options -x -s t -l timeout -d 'time limit per attempt, 0 = none'
complete -c patience -n __patience_options -x -s s -l signal -a 'TERM INT HUP QUIT KILL USR1 USR2 ALRM 0 RTMIN RTMIN+1 RTMAX-1 RTMAX' -d 'signal sent at timeout, 0 = none'
complete -c patience -n __patience_options -x -s k -l kill-after -d 'grace before SIGKILL after the first signal, 0 = no SIGKILL'
complete -c patience -n __patience_options -x -l deadline -d 'limit for the whole run, delays included'
complete -c patience -n __patience_options -x -l stagger -d 'wait a random time in [0, DUR) before the first attempt, 0 = none'
complete -c patience -n __patience_options -x -s d -l delay -d 'base delay between attempts, or a list 1s,5s,30s'
complete -c patience -n __patience_options -x -s b -l backoff -a 'fixed linear exponential fibonacci jitter decorrelated-jitter' -d 'how the delay grows'
complete -c patience -n __patience_options -x -l multiplier -d 'exponential growth factor'
complete -c patience -n __patience_options -x -l max-delay -d 'cap on any delay'
complete -c patience -n __patience_options -x -l jitter -d 'random spread of +-FRACTION on any delay'
complete -c patience -n __patience_options -x -l reset-after -d 'an attempt that ran this long restarts the backoff'
complete -c patience -n __patience_options -x -l restart -a 'on-failure always on-success' -d 'restart policy'
complete -c patience -n __patience_options -f -l foreground -d "keep the command in patience's process group"
complete -c patience -n __patience_options -f -l init -d 'reap every orphan, as PID 1 does'
complete -c patience -n __patience_options -x -l name -d "the run's name in reports and metrics"
complete -c patience -n __patience_options -x -l success-exit -d 'exit codes that count as success'
complete -c patience -n __patience_options -x -l retry-exit -d 'only these failing exit codes are retried; a timeout is 124'
complete -c patience -n __patience_options -x -l stop-exit -d 'these exit codes are final, never retried; a timeout is 124'
complete -c patience -n __patience_options -x -l success-pattern -d 'the output must match RE for success'
complete -c patience -n __patience_options -x -l failure-pattern -d 'output matching RE fails the attempt'
complete -c patience -n __patience_options -x -l abort-pattern -d 'output matching RE makes a failure final'
complete -c patience -n __patience_options -x -l retry-pattern -d 'retry a failure only if the output matched RE'
complete -c patience -n __patience_options -f -l transient -d 'retry only transient errors'
complete -c patience -n __patience_options -x -l match-stream -a 'stdout stderr both' -d 'what patterns read'
complete -c patience -n __patience_options -x -l output -a 'live final failure' -d 'what of the output is shown (final: stdout only)'
complete -c patience -n __patience_options -f -l hold-output -d 'same as --output failure (cron mode)'
complete -c patience -n __patience_options -x -l stdin -a 'inherit replay null' -d 'what each attempt reads'
complete -c patience -n __patience_options -f -s q -l quiet -d 'print only the final failure line'
complete -c patience -n __patience_options -f -s v -l verbose -d 'also print attempt starts and delays'
complete -c patience -n __patience_options -x -l color -a 'auto always never' -d 'when to use colour'
complete -c patience -n __patience_options -f -l summary -d 'print run statistics at the end'
complete -c patience -n __patience_options -r -F -l summary-json -d 'write a JSON report of the run (- for stderr)'
complete -c patience -n __patience_options -x -l textfile-dir -a '(__fish_complete_directories)' -d 'also write the run\'s metrics to DIR/NAME.prom'
complete -c patience -n __patience_options -f -l no-metrics -d 'send nothing to patienced'
complete -c patience -n __patience_options -x -l key -d 'the key of the shared state'
complete -c patience -n __patience_options -x -l state-url -d 'share the state of keys through a Redis server'
complete -c patience -n __patience_options -r -F -l state-url-password-file -d 'the state server password is the first line of FILE'
complete -c patience -n __patience_options -x -l breaker -d 'refuse runs after N consecutive failed attempts'
complete -c patience -n __patience_options -x -l breaker-cooldown -d 'how long the breaker refuses runs'
complete -c patience -n __patience_options -x -l rate-limit -d 'at most N attempts per DUR (N/DUR)'
complete -c patience -n __patience_options -x -l max-concurrent -d 'at most N runs of the key at once'
complete -c patience -n __patience_options -x -l slot-wait -d 'wait up to DUR for a free slot'
complete -c patience -n __patience_options -x -l refused-exit -a '75 0 1' -d 'exit status of a run refused before running (0-255)'
complete -c patience -n __patience_options -x -s p -l profile -d 'layer a profile of the config file over its defaults'
complete -c patience -n __patience_options -r -F -l config -d 'read only this config file'
complete -c patience -n __patience_options -f -l no-config -d 'read no config file'
complete -c patience -n __patience_options -r -F -l services -d 'run the stack of services in FILE'
complete -c patience -n __patience_options -f -l dry-run -d 'print the resolved settings and delays; run nothing'
complete -c patience -n __patience_options -x -l state -d 'print the shared state of KEY as JSON'
complete -c patience -n __patience_options -x -l reset-state -d 'clear the shared state of KEY'
complete -c patience -n __patience_options -f -s h -l help -d 'print the help'
complete -c patience -n __patience_options -f -s V -l version -d 'print the version'
