import ast, pathlib, sys, collections
root = pathlib.Path(__file__).resolve().parents[3] / 'nli_tune'
mods = {p.stem for p in root.glob('*.py')}
edges = collections.defaultdict(list)  # (src,dst) -> [(line, lazy, names)]
ray = {}
for p in sorted(root.glob('*.py')):
    src = p.stem
    tree = ast.parse(p.read_text())
    # find which nodes are at top-level (module body, including if/try at module level)
    top = set()
    def mark(body):
        for n in body:
            top.add(id(n))
            if isinstance(n,(ast.If,ast.Try)):
                for b in ('body','orelse','finalbody'):
                    mark(getattr(n,b,[]))
                for h in getattr(n,'handlers',[]): mark(h.body)
    mark(tree.body)
    for n in ast.walk(tree):
        lazy = id(n) not in top
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split('.')[0]=='ray': ray.setdefault(src,[]).append((n.lineno,lazy,a.name))
                if a.name.startswith('nli_tune.'):
                    edges[(src,a.name.split('.')[1])].append((n.lineno,lazy,''))
        elif isinstance(n, ast.ImportFrom) and n.module:
            if n.module.split('.')[0]=='ray': ray.setdefault(src,[]).append((n.lineno,lazy,n.module))
            if n.module=='nli_tune':
                for a in n.names:
                    if a.name in mods: edges[(src,a.name)].append((n.lineno,lazy,''))
                    else: edges[(src,'__init__')].append((n.lineno,lazy,a.name))
            elif n.module.startswith('nli_tune.'):
                edges[(src,n.module.split('.')[1])].append((n.lineno,lazy,','.join(a.name for a in n.names)))
mode = sys.argv[1] if len(sys.argv)>1 else 'edges'
if mode=='edges':
    for (s,d),v in sorted(edges.items()):
        if d=='__init__': 
            print(s+' -> nli_tune/__init__ ('+', '.join(str(l)+('*' if z else '')+':'+n for l,z,n in v)+')'); continue
        print(f"{s} -> {d}: " + '; '.join(f"{l}{'*' if z else ''} {n}" for l,z,n in v))
elif mode=='ray':
    for s,v in sorted(ray.items()):
        print(s, '; '.join(f"{l}{'*' if z else ''} {n}" for l,z,n in v))
elif mode=='cycles':
    for lazyok in (False, True):
        g = collections.defaultdict(set)
        for (s,d),v in edges.items():
            if d=='__init__' or s==d: continue
            if lazyok or any(not z for _,z,_ in v): g[s].add(d)
        # Tarjan SCC
        idx={}; low={}; st=[]; on=set(); out=[]; c=[0]
        sys.setrecursionlimit(10000)
        def sc(v):
            idx[v]=low[v]=c[0]; c[0]+=1; st.append(v); on.add(v)
            for w in g[v]:
                if w not in idx: sc(w); low[v]=min(low[v],low[w])
                elif w in on: low[v]=min(low[v],idx[w])
            if low[v]==idx[v]:
                comp=[]
                while True:
                    w=st.pop(); on.discard(w); comp.append(w)
                    if w==v: break
                if len(comp)>1: out.append(sorted(comp))
        for v in list(g): 
            if v not in idx: sc(v)
        print('with lazy' if lazyok else 'top-level only', out)
        # simple cycles (short) 
        def cyc(start):
            res=[]
            def dfs(v,path):
                for w in g[v]:
                    if w==start and len(path)>1: res.append(path+[start])
                    elif w not in path and w>start and len(path)<6: dfs(w,path+[w])
            dfs(start,[start]); return res
        for v in sorted(g):
            for cy in cyc(v): print('  ', ' -> '.join(cy))
