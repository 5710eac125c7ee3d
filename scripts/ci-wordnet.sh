#!/usr/bin/env bash
# WordNet for nltk's METEOR without internet: Debian's wordnet-base + wordnet-sense-index arranged
# as an nltk `corpora/wordnet` folder, plus the `lexnames` table Debian does not ship (generated
# here). Online, `python -m nltk.downloader wordnet` does the same. nltk >= 3.9 refuses data
# folders other accounts can write, so the target is under $HOME (or $NLTK_DATA when set).
set -euo pipefail
target="${NLTK_DATA:-$HOME/nltk_data}/corpora/wordnet"
src=/usr/share/wordnet
if [ ! -f "$src/index.sense" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index) >/dev/null 2>&1 \
    || { echo "wordnet-base / wordnet-sense-index could not be installed: the METEOR tests will skip" >&2; exit 0; }
fi
if [ ! -f "$src/index.sense" ]; then
  echo "no WordNet database under $src: the METEOR tests will skip" >&2
  exit 0
fi
mkdir -p "$target"
cp "$src"/data.* "$src"/index.* "$src"/*.exc "$target"/
names=(adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body
       noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location
       noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
       noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
       verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation
       verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl)
: > "$target/lexnames"
for i in "${!names[@]}"; do
  name=${names[$i]}
  case ${name%%.*} in adj) pos=3 ;; adv) pos=4 ;; noun) pos=1 ;; verb) pos=2 ;; esac
  printf '%02d\t%s\t%d\n' "$i" "$name" "$pos" >> "$target/lexnames"
done
echo "WordNet for nltk in $target"
