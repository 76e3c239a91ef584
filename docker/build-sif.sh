#!/usr/bin/env bash
# Build a Singularity/Apptainer image (.sif) from the sparse-ticket Docker image.
#
#   docker/build-sif.sh                             sparse-ticket:latest from the local Docker
#                                                   daemon -> sparse-ticket.sif
#   docker/build-sif.sh --image sparse-ticket:TAG --output st.sif
#   docker/build-sif.sh --archive st.tar            from `docker save sparse-ticket:latest -o st.tar`
#                                                   (e.g. on a cluster without Docker)
#   docker/build-sif.sh --recipe                    through docker/sparse-ticket.def (adds run-help;
#                                                   may need --fakeroot: pass it after --)
#
# Extra options after `--` go to `apptainer build` (or `singularity build`), e.g. -- --force.
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image=sparse-ticket:latest
archive=""
recipe=false
output=sparse-ticket.sif
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) image="${2:?--image needs a value}"; shift 2 ;;
        --archive) archive="${2:?--archive needs a file}"; shift 2 ;;
        --recipe) recipe=true; shift ;;
        --output) output="${2:?--output needs a file}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "build-sif.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if command -v apptainer >/dev/null 2>&1; then
    builder=apptainer
elif command -v singularity >/dev/null 2>&1; then
    builder=singularity
else
    echo "build-sif.sh: neither apptainer nor singularity is installed" >&2
    exit 1
fi

if [[ -n "$archive" ]]; then
    if [[ "$recipe" == true ]]; then
        echo "build-sif.sh: --recipe builds from the Docker daemon, not from --archive" >&2
        exit 2
    fi
    [[ -f "$archive" ]] || { echo "build-sif.sh: no such archive: $archive" >&2; exit 1; }
    source="docker-archive://$archive"
elif [[ "$recipe" == true ]]; then
    if [[ "$image" != sparse-ticket:latest ]]; then
        echo "build-sif.sh: the recipe builds from sparse-ticket:latest; tag $image so first" >&2
        exit 2
    fi
    source="$here/sparse-ticket.def"
else
    source="docker-daemon://$image"
fi

# ${extra[@]+...}: an empty array is "unbound" under set -u in bash < 4.4
echo "+ $builder build ${extra[*]+${extra[*]}} $output $source" >&2
"$builder" build ${extra[@]+"${extra[@]}"} "$output" "$source"
echo "built $output (usage: README.md, \"Containers\")"
