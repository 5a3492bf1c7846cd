# Renames staged keys into place and removes their staging directories.
# swap DEST_DIR STAGE NAME: STAGE is the directory stage.sh printed, relative to DEST_DIR.
# discard DEST_DIR STAGE NAME: removes a staged key that will not be used.
# Both first check that STAGE is still our empty-but-for-the-key, root-owned 0700 directory
# inside DEST_DIR (someone who can write DEST_DIR could have swapped it for a link).
set -eu
set -f

enter() {
    cd -P -- "$1"
    di=$(stat -c %d:%i .)
    if ! cd -P -- "$2" 2>/dev/null || [ "$(stat -c '%u %a' .)" != "0 700" ] || [ "$(stat -c %d:%i ..)" != "$di" ] ||
        [ ! -f "$3" ] || [ -L "$3" ] || [ "$(ls -A)" != "$3" ]; then
        echo "moved $1/$2" >&2
        exit 4
    fi
}

swap() {
    (
        enter "$@"
        # rename(2) replaces whatever entry is there (a link included) and never follows it.
        mv -f -T -- "$3" "../$3"
        cd ..
        rmdir -- "$2"
    )
}

discard() {
    (
        enter "$@"
        rm -f -- "$3"
        cd ..
        rmdir -- "$2"
    ) || true
}
