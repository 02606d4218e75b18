# fish completion for patiencectl(1): verbs, their options, and service
# names read from the services file (-f FILE, else ./services.toml). Kept
# in step with `patiencectl --help` by tests/install.rs.

function __patiencectl_services
    set -l file services.toml
    set -l words (commandline -opc)
    for i in (seq (count $words))
        if contains -- $words[$i] -f --file; and test $i -lt (count $words)
            set file $words[(math $i + 1)]
        end
    end
    test -f $file; or return
    sed -n 's/^[[:space:]]*\[service\.\([a-z0-9._-]*\)\][[:space:]]*\(#.*\)\{0,1\}$/\1/p' $file
end

set -l verbs up down start stop restart status ps logs wait check signal reset
complete -c patiencectl -f
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -s f -l file -r -F -d 'the services file'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -s s -l socket -r -F -d 'the control socket'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -s h -l help -d 'print the usage'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -s V -l version -d 'print the version'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'up' -d 'start services, or run the supervisor'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'down' -d 'stop the stack'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'start' -d 'start services'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'stop' -d 'stop services'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'restart' -d 'stop and start again'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'status ps' -d 'the state of every service'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'logs' -d 'the last lines of the services'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'wait' -d 'until ready or succeeded'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'check' -d 'every critical service ready?'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'signal' -d 'send a signal to services'
complete -c patiencectl -n "not __fish_seen_subcommand_from $verbs" -a 'reset' -d 'forget failures'
complete -c patiencectl -n "__fish_seen_subcommand_from up" -s d -l detach -d 'run detached'
complete -c patiencectl -n "__fish_seen_subcommand_from down wait" -s t -l timeout -r -d 'duration'
complete -c patiencectl -n "__fish_seen_subcommand_from status ps" -l json -d 'the status as JSON'
complete -c patiencectl -n "__fish_seen_subcommand_from logs" -s f -l follow -d 'follow'
complete -c patiencectl -n "__fish_seen_subcommand_from logs" -s n -l lines -r -d 'lines'
complete -c patiencectl -n "__fish_seen_subcommand_from wait" -l for -r -a 'ready succeeded' -d 'goal'
complete -c patiencectl -n "__fish_seen_subcommand_from signal; and test (count (commandline -opc)) -le 2" -a 'HUP INT TERM QUIT USR1 USR2 KILL'
complete -c patiencectl -n "__fish_seen_subcommand_from up start stop restart logs wait signal reset" -a '(__patiencectl_services)'
