# bash completion for tsproxy(1)
_tsproxy() {
    local cur prev words cword
    _init_completion || return

    # The first word that is not an option (or an option's value) is a subcommand or the
    # command to run; after --, always the command.
    local i sub=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --proxy | --proxychains-conf | --supervisor) ((i++)) ;;
            --) _command_offset $((i + 1)); return ;;
            -*) ;;
            *) sub=${words[i]}; break ;;
        esac
    done

    case $sub in
        env)
            case $prev in
                --shell) COMPREPLY=($(compgen -W 'sh fish' -- "$cur")); return ;;
                --proxy) return ;;
                --proxychains-conf) _filedir; return ;;
            esac
            COMPREPLY=($(compgen -W '--unset --shell --proxy --proxychains-conf --help' -- "$cur"))
            return ;;
        install | uninstall)
            case $prev in
                --lib) _filedir so; return ;;
            esac
            COMPREPLY=($(compgen -W '--system --lib --help' -- "$cur"))
            return ;;
        doctor)
            case $prev in
                --socket) _filedir; return ;;
            esac
            [[ $cur == -* ]] && COMPREPLY=($(compgen -W '--json --socket --help' -- "$cur"))
            return ;;
        '') ;;
        *) _command_offset "$i"; return ;;
    esac

    case $prev in
        --proxy) return ;;
        --proxychains-conf) _filedir; return ;;
        --supervisor) COMPREPLY=($(compgen -W 'auto on off' -- "$cur")); return ;;
    esac
    if [[ $cur == --supervisor=* ]]; then
        COMPREPLY=($(compgen -W 'auto on off' -- "${cur#--supervisor=}"))
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '--quiet --verbose --proxy --proxychains-conf --supervisor= --allow-unprotected --help --version --' -- "$cur"))
        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
        return
    fi
    COMPREPLY=($(compgen -W 'env install uninstall doctor' -- "$cur"))
    COMPREPLY+=($(compgen -c -- "$cur"))
}
complete -F _tsproxy tsproxy
