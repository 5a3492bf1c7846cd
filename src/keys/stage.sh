# Stages one key, its content on stdin, in a private directory inside its destination directory.
# The caller sets d (dest_dir), n (file name), mode (octal), u and g (owner), insecure (0 or 1).
# Prints one line:
#   unsafe PATH WHY          a directory on the way can be changed by someone other than root
#   moved PATH               the private staging directory was swapped under us
#   staged owned|pending-owner DIR   DIR (relative to dest_dir) holds the key, ready to rename
set -eu
set -f
c=$(readlink -m -- "$d")

# Refuses a directory whose entries someone other than root could replace. Checked from / down,
# so once a directory passes, nobody but root can swap the next component under us.
vet() {
    if [ -L "$1" ]; then
        echo "unsafe $1 is a symbolic link"
        exit 3
    fi
    set -- "$1" $(stat -c '%u %g %a' -- "$1")
    m=$((0$4))
    if [ "$2" != 0 ]; then
        echo "unsafe $1 is owned by uid $2"
        exit 3
    fi
    if [ $((m & 2)) != 0 ]; then
        echo "unsafe $1 is writable by everyone (mode $4)"
        exit 3
    fi
    if [ "$3" != 0 ] && [ $((m & 16)) != 0 ]; then
        echo "unsafe $1 is writable by group gid $3 (mode $4)"
        exit 3
    fi
}

if [ "$insecure" != 1 ]; then
    vet /
    p=
    rest=${c#/}
    while [ -n "$rest" ]; do
        part=${rest%%/*}
        case $rest in
        */*) rest=${rest#*/} ;;
        *) rest= ;;
        esac
        p=$p/$part
        if [ ! -e "$p" ] && [ ! -L "$p" ]; then
            break
        fi
        vet "$p"
    done
fi

[ -d "$c" ] || mkdir -p -m 0751 -- "$c"
cd -P -- "$c"
di=$(stat -c %d:%i .)
umask 077
# mkdir(2) never follows a link and fails on an existing name: the directory is ours, 0700.
s=$(mktemp -d .nixdeploy-stage.XXXXXX)
moved() {
    echo "moved $c/$s"
    exit 4
}
cd -P -- "$s" 2>/dev/null || moved
# Whoever can write dest_dir could have renamed ours and left a link in its place: make sure
# we stand in an empty root-owned 0700 directory whose parent is dest_dir. Nobody but root can
# enter it, so nothing below can be raced.
if [ "$(stat -c '%u %a' .)" != "0 700" ] || [ "$(stat -c %d:%i ..)" != "$di" ] || [ -n "$(ls -A)" ]; then
    moved
fi
: >"$n"
chmod "$mode" -- "$n"
if id -u "$u" >/dev/null 2>&1 && getent group "$g" >/dev/null 2>&1; then
    chown -h "$u:$g" -- "$n"
    o=owned
else
    o=pending-owner
fi
if ! cat >"$n"; then
    rm -f -- "$n"
    cd ..
    rmdir -- "$s"
    exit 1
fi
echo "staged $o $s"
