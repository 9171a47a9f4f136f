# fish completion for tsproxy(1)

function __tsproxy_first_word
    # The first word that is not a launcher option or its value: a subcommand or the command
    # to run (after --, the command). Prints nothing while there is none yet.
    set -l words (commandline -opc)
    set -e words[1]
    set -l skip 0
    for w in $words
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case --proxy --proxychains-conf --supervisor
                set skip 1
            case --
                echo --
                return
            case '-*'
            case '*'
                echo $w
                return
        end
    end
end

function __tsproxy_no_subcommand
    set -l w (__tsproxy_first_word)
    test -z "$w"
end

function __tsproxy_using
    set -l w (__tsproxy_first_word)
    test "$w" = $argv[1]
end

complete -c tsproxy -f
# Options of the launcher.
complete -c tsproxy -n __tsproxy_no_subcommand -s q -l quiet -d 'Log nothing'
complete -c tsproxy -n __tsproxy_no_subcommand -s v -l verbose -d 'Log every decision to stderr'
complete -c tsproxy -n __tsproxy_no_subcommand -l proxy -x -d 'Proxy list (socks5://, socks5h://, http://)'
complete -c tsproxy -n __tsproxy_no_subcommand -l proxychains-conf -r -F -d 'Take the proxy from a proxychains4.conf'
complete -c tsproxy -n __tsproxy_no_subcommand -l supervisor -x -a 'auto on off' -d 'Seccomp supervisor for static binaries'
complete -c tsproxy -n __tsproxy_no_subcommand -l allow-unprotected -d 'Run a setuid/setgid/setcap command without the supervisor'
complete -c tsproxy -n __tsproxy_no_subcommand -s h -l help -d 'Print the usage'
complete -c tsproxy -n __tsproxy_no_subcommand -s V -l version -d 'Print the version'
# Subcommands, or any command to run.
complete -c tsproxy -n __tsproxy_no_subcommand -a env -d 'Print shell lines that enable tsproxy'
complete -c tsproxy -n __tsproxy_no_subcommand -a install -d 'Add the library to /etc/ld.so.preload (--system)'
complete -c tsproxy -n __tsproxy_no_subcommand -a uninstall -d 'Remove it from /etc/ld.so.preload (--system)'
complete -c tsproxy -n __tsproxy_no_subcommand -a doctor -d 'Diagnose the proxy, tailscaled and the library'
complete -c tsproxy -n __tsproxy_no_subcommand -a '(__fish_complete_command)'
# After the command to run (or --): that command's own completions.
complete -c tsproxy -n 'not __tsproxy_no_subcommand; and not contains -- (__tsproxy_first_word) env install uninstall doctor' -a '(__fish_complete_subcommand)'
# env
complete -c tsproxy -n '__tsproxy_using env' -s u -l unset -d 'Print the lines that disable tsproxy'
complete -c tsproxy -n '__tsproxy_using env' -l shell -x -a 'sh fish' -d 'Shell syntax'
complete -c tsproxy -n '__tsproxy_using env' -l proxy -x -d 'Export TSPROXY_PROXY'
complete -c tsproxy -n '__tsproxy_using env' -l proxychains-conf -r -F -d 'Export TSPROXY_PROXYCHAINS_CONF'
# install / uninstall
complete -c tsproxy -n '__tsproxy_using install; or __tsproxy_using uninstall' -l system -d 'Every process of the machine (/etc/ld.so.preload)'
complete -c tsproxy -n '__tsproxy_using install; or __tsproxy_using uninstall' -l lib -r -F -d 'The library'
# doctor
complete -c tsproxy -n '__tsproxy_using doctor' -l json -d 'Print one JSON object'
complete -c tsproxy -n '__tsproxy_using doctor' -l socket -r -F -d 'tailscaled LocalAPI socket'
