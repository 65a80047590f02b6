"""Sentence templates for the synthetic ReDSM5 generator (see synth.py).

Templates use ``{slot}`` placeholders filled from SLOTS, and `` -- `` as a dash marker that
each post renders in its own style. Positive and hard-negative templates of a symptom share
the same keyword slots on purpose: a bag-of-words model then sees the same topic words on
both sides and has to rely on negation, tense and who the sentence is about.
"""

from __future__ import annotations

# Wrapped tuples: one item per line would triple the length of this data.
# fmt: off
SLOTS: dict[str, tuple[str, ...]] = {
    # --- shared by symptom templates ---
    # "t" (how often, how recently) fits any tense; "tp" (how long, since when) needs a
    # perfect tense ("I've been ... for weeks now").
    "t": (
        "lately", "these days", "most days", "every single day", "pretty much every day",
        "all the time lately", "almost every day", "nearly every day lately", "right now",
        "at the moment", "constantly these days", "most of the time",
    ),
    "tp": (
        "for weeks now", "for like a month", "for the past few months", "since I moved",
        "since the start of the year", "for two months straight", "since the breakup", "for ages",
        "since summer", "for the last couple of weeks", "since March", "all year",
        "since I started this job", "since Christmas",
    ),
    "p": (
        "back in high school", "a couple years ago", "during my first year of uni", "last winter",
        "when I was 19", "for a while in 2019", "after my dad passed", "during lockdown",
        "right after my divorce", "when I was a teenager",
    ),
    "h": (
        "therapy really helped", "the meds finally kicked in", "things got a lot better",
        "that's behind me now", "I got through it", "I'm in a much better place now",
        "switching jobs fixed most of it", "I worked through it with my counsellor",
        "it slowly went away", "getting out of that relationship changed everything",
    ),
    "r": (
        "my sister", "my roommate", "my mom", "my best friend", "my boyfriend", "my coworker",
        "a friend of mine", "my brother", "my girlfriend", "my dad", "my cousin", "my partner",
    ),
    "ev": (
        "the hike on Saturday", "moving apartments", "a double shift", "my cousin's wedding",
        "finals week", "a 12 hour drive", "the flu", "a long week at work", "the concert",
    ),
    "chill": (
        "a bit bored", "stressed about exams", "busy with work", "annoyed at my landlord",
        "kind of stressed about money", "sick of this weather", "cranky because of a cold",
    ),
    "gripe": (
        "my commute", "my job", "group projects", "my landlord", "this weather", "my manager",
        "online classes", "traffic",
    ),
    "late": (
        "4am", "3 in the morning", "sunrise", "5am", "2 or 3am",
    ),
    "early": (
        "3am", "4am", "like 4:30", "5am",
    ),
    # --- symptom keyword slots ---
    "mood": (
        "so sad", "empty inside", "miserable", "hopeless", "numb", "so low", "really down",
        "completely hollow", "heavy and sad", "sad and empty",
    ),
    "hobby": (
        "gaming", "drawing", "music", "going out with friends", "reading", "the gym", "cooking",
        "playing guitar", "hiking", "anime", "football", "photography", "painting", "skating",
    ),
    "wt": (
        "10 pounds", "5 kilos", "15 lbs", "like 20 pounds", "8 kg", "a stone",
    ),
    "meal": (
        "breakfast", "lunch", "dinner",
    ),
    "junk": (
        "pizza", "ice cream", "takeout", "chocolate", "chips", "burgers",
    ),
    "hrs": (
        "three hours", "four hours", "two hours", "maybe three hours",
    ),
    "hrs_long": (
        "12 hours", "14 hours", "11 hours", "13 hours",
    ),
    "hrs_ok": (
        "eight hours", "seven or eight hours", "a solid eight hours", "7 hours",
    ),
    "fat": (
        "exhausted", "completely drained", "wiped out", "worn out", "so tired", "drained",
        "dead tired", "utterly spent", "beyond exhausted", "physically drained", "worn down",
    ),
    "fata": (
        "exhausted", "drained", "tired", "wiped", "worn out",
    ),
    "wf": (
        "worthless", "useless", "like a burden", "like a failure", "pathetic",
        "like I'm not good enough", "like a waste of space", "like a total disappointment",
    ),
    "wn": (
        "worthless", "useless", "a failure", "a burden", "pathetic", "a disappointment",
    ),
    "fault": (
        "being so sensitive", "messing everything up", "letting everyone down", "being so lazy",
        "never finishing anything", "being such a mess", "being so weak",
    ),
    "guilt": (
        "things I said years ago", "being a burden to my parents", "not visiting my grandma",
        "every little mistake", "stuff that happened ages ago", "wasting my parents' money",
    ),
    "undeserved": (
        "my friends", "my girlfriend", "the help I'm getting", "anything nice", "my job",
        "people being kind to me",
    ),
    "forget": (
        "appointments", "what I was saying mid-sentence", "why I walked into a room",
        "deadlines at work", "people's names", "to reply to messages",
    ),
    "course": (
        "stats", "chem", "history", "calc", "orgo", "econ",
    ),
    # --- special case ---
    "trauma": (
        "the accident", "what happened at my old house", "that night", "the assault",
    ),
    "dx": (
        "bipolar II", "PTSD", "generalised anxiety", "ADHD", "BPD", "OCD",
    ),
    # --- filler ---
    "job": (
        "a warehouse", "a coffee shop", "a call centre", "a small law firm", "a grocery store",
        "a hospital", "an IT helpdesk", "a restaurant", "a daycare", "a bank",
    ),
    "work_state": (
        "pretty hectic", "kind of boring", "okay I guess", "really busy", "chaotic",
    ),
    "work_event": (
        "we got a new manager", "the merger", "they changed our schedules", "the holidays",
        "two people quit", "we switched software",
    ),
    "year": (
        "first", "second", "third", "final",
    ),
    "subject": (
        "nursing", "computer science", "accounting", "biology", "history", "engineering",
        "psychology", "graphic design", "law",
    ),
    "pet": (
        "cat", "dog", "rabbit", "parrot", "hamster",
    ),
    "pet_act": (
        "knocked a glass off the counter this morning", "keeps stealing my socks",
        "has learned to open the cupboard", "turned five last week",
        "hates the vacuum more than anything", "got into the trash again",
    ),
    "game": (
        "Stardew Valley", "Minecraft", "Elden Ring", "Valorant", "Animal Crossing", "Rocket League",
        "Fortnite", "Baldur's Gate 3",
    ),
    "fam": (
        "mom", "dad", "aunt", "grandpa", "older brother", "little sister", "stepdad",
    ),
    "when_f": (
        "next weekend", "around Thanksgiving", "in a few weeks", "over the summer",
    ),
    "when_p": (
        "last year", "in January", "a few months ago", "two years ago", "last spring",
    ),
    "weather": (
        "raining nonstop", "weirdly warm", "freezing", "super humid", "grey and windy",
    ),
    "place": (
        "Ohio", "a small town up north", "Manchester", "Toronto", "Denver", "Melbourne",
    ),
    "why": (
        "work", "school", "my partner's job", "cheaper rent", "a fresh start",
    ),
    "age": tuple(str(a) for a in range(16, 46)),
    "sex": (
        "M", "F", "NB",
    ),
    "ask": (
        "something like this", "a situation like this", "this kind of thing", "anything similar",
        "a family like mine",
    ),
    "tip": (
        "talking to parents about this", "finding a therapist on a budget",
        "getting through a semester", "dealing with roommates", "job interviews",
        "saving money on groceries", "learning to drive as an adult",
    ),
    "goal": (
        "a new laptop", "a trip to Japan", "moving out", "a car", "a new phone",
    ),
    "show": (
        "The Office", "Severance", "Bluey", "Succession", "One Piece", "Bake Off",
    ),
    "activity": (
        "learning Spanish", "running", "a pottery class", "volunteering", "crocheting",
    ),
    "fam_act": (
        "went to the lake last summer", "don't really talk much", "argue about politics",
        "get along fine most of the time", "have a group chat that never stops",
    ),
    "quote": (
        "we're a family here", "let's circle back", "just be more proactive",
    ),
}
# fmt: on

# Positive (status 1) templates; every symptom gets 15+ so surface forms number in hundreds.
POS: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": (
        "I've been {mood} {tp}.",
        "I'm {mood} {t} and I don't even know why.",
        "I feel {mood} {t}.",
        "I cried in the car again today -- third time this week.",
        "There's this heavy sadness sitting on my chest {t}.",
        "I wake up sad and I go to bed sad.",
        "Everything feels grey and pointless {t}.",
        "I can't remember the last time I felt okay.",
        "I'm {mood} and nothing anyone says helps.",
        "Some days I just sit in my room feeling {mood}.",
        "My mood has been in the gutter {tp}.",
        "I'm crying at least once a day and I can't stop.",
        "It's like there's a dark cloud over me {t}.",
        "I just feel {mood}, all day, every day.",
        "The sadness never really lifts anymore.",
        "I'm tired of feeling {mood} {t}.",
        "I hate that I'm crying right now.",
        "I'm stuck in this constant low mood and I can't shake it.",
    ),
    "ANHEDONIA": (
        "I don't enjoy {hobby} anymore, it just feels like a chore.",
        "I used to love {hobby}, now I can't be bothered with it.",
        "Nothing is fun anymore, not even {hobby}.",
        "I've lost interest in basically everything.",
        "I tried {hobby} again last weekend and felt absolutely nothing.",
        "I just don't care about {hobby} or anything else {t}.",
        "Stuff that used to make me happy, like {hobby}, does nothing for me now.",
        "I haven't bothered with {hobby} in months because what's the point.",
        "My friends invite me out but I have zero interest {t}.",
        "I'm just going through the motions {t}.",
        "Even {hobby} feels pointless now.",
        "I can't get excited about anything, not even {hobby}.",
        "My sex drive has been completely gone {tp}.",
        "I quit {hobby} because it stopped being fun -- nothing is fun.",
        "I have no desire to do anything I used to like.",
        "Nothing interests me anymore.",
    ),
    "APPETITE_CHANGE": (
        "I barely eat anymore, maybe one meal a day {t}.",
        "I've lost {wt} in the last couple of months without even trying.",
        "I have no appetite at all {t}.",
        "I keep skipping {meal} because food just doesn't appeal to me.",
        "I've been stress eating constantly and I've gained {wt} {tp}.",
        "Food tastes like cardboard {t}.",
        "I forget to eat until it's like 9pm and then I don't want anything.",
        "I can't stop binge eating {t}.",
        "My appetite is completely gone {t}.",
        "I've gained {wt} since this started because I'm eating all the time.",
        "Even the thought of {junk} makes me feel sick now.",
        "I force myself to eat {meal} and I usually can't finish it.",
        "I'm eating way more than usual {t}, like I can't stop.",
        "My clothes are falling off me, I've lost so much weight.",
        "I literally have to remind myself to eat.",
        "I eat a whole tub of {junk} most nights and still feel empty.",
    ),
    "SLEEP_ISSUES": (
        "I can't sleep {t}, I'm up until {late} most nights.",
        "Most nights I wake up at {early} and can't get back to sleep.",
        "I've been sleeping like {hrs_long} a day and still wanting more.",
        "My sleep schedule has been completely wrecked {tp}.",
        "I lie in bed for hours staring at the ceiling.",
        "I'm getting {hrs} of sleep a night, if that.",
        "Insomnia has been kicking my ass {tp}.",
        "I sleep through my alarms and basically all afternoon {t}.",
        "Some nights I don't sleep at all.",
        "I can't fall asleep because my mind won't stop racing {t}.",
        "I need pills to get any sleep now.",
        "I've been napping all day and lying awake all night.",
        "I sleep {hrs_long} and it's never enough.",
        "I spend my nights scrolling until {late} because I just can't sleep.",
        "I keep waking up every hour or so {t}.",
        "I only sleep properly when I don't have to set an alarm, which is never.",
    ),
    "PSYCHOMOTOR": (
        "I can't sit still {t}, I'm always pacing around my room.",
        "I feel like I'm moving in slow motion {t}.",
        "My legs won't stop bouncing and I keep fidgeting with everything.",
        "People at work have said I talk really slowly now.",
        "Even walking to the kitchen feels like wading through mud.",
        "I'm so restless {t}, I keep pacing until my feet hurt.",
        "My body feels heavy and sluggish, like everything is slowed down.",
        "I keep picking at my skin and tapping my fingers, I physically can't stay still.",
        "It takes me forever to answer when someone talks to me -- my body and brain are slow.",
        "I've been so agitated {tp}, I can't sit through a single episode of anything.",
        "My movements feel really slow and clumsy {t}.",
        "My roommate asked why I'm pacing the hallway at night again.",
        "I feel physically slowed down, like my limbs are full of sand.",
        "I'm constantly wringing my hands and shifting around {t}.",
        "Sometimes I just sit frozen for an hour without moving.",
    ),
    "FATIGUE": (
        "I'm {fat} {t} even when I do nothing.",
        "I've been {fat} {tp} and sleep doesn't fix it.",
        "I have zero energy {t}.",
        "Showering feels like running a marathon.",
        "I'm {fat}, like my battery never charges.",
        "I come home and I'm too {fata} to even cook.",
        "Even small stuff like answering a text leaves me {fat}.",
        "I feel {fat} {t}.",
        "I have no energy to get out of bed most days.",
        "My whole body feels heavy and {fata} {t}.",
        "I've been so fatigued {tp} that I keep calling in sick.",
        "Doing the dishes wipes me out for the rest of the day.",
        "It's like I'm walking through life with weights on.",
        "I'm {fat} by lunchtime every day.",
        "I just don't have the energy for anything {t}.",
        "I feel awful and completely drained.",
        "I'm running on empty {t}.",
        "I'm tired all the time, no matter how much I rest.",
    ),
    "WORTHLESSNESS": (
        "I feel {wf} {t}.",
        "I'm {wn} and everyone around me can see it.",
        "I hate myself for {fault}.",
        "Everything is my fault, I ruin everything I touch.",
        "I feel so guilty about {guilt} that I can't stop thinking about it.",
        "I'm just {wn}, there's no other way to put it.",
        "I can't do anything right.",
        "I constantly feel {wf} around my family.",
        "Looking back, I've made so many bad choices and it's all on me.",
        "I don't deserve {undeserved}.",
        "I'm a complete failure at everything {t}.",
        "I'm a disappointment to my parents and I know it.",
        "I keep apologising for existing.",
        "I feel guilty all the time, even for stuff that isn't my fault.",
        "Everyone my age has their life together and I'm just garbage.",
        "Honestly I feel {wf} compared to everyone around me.",
        "I can't make friends because I'm awkward and people can sense it.",
    ),
    "COGNITIVE_ISSUES": (
        "I can't focus on anything {t}.",
        "I read the same paragraph five times and still don't get it.",
        "My brain feels foggy {t}.",
        "I can't make even simple decisions like what to eat.",
        "I keep forgetting {forget} {t}.",
        "I'm so indecisive {t} that I just freeze.",
        "I used to be sharp but now I can't concentrate for more than a minute.",
        "My grades are tanking because I literally can't concentrate.",
        "It's like my head is full of cotton {t}.",
        "Thinking feels like wading through mud.",
        "I zone out in every conversation {t}.",
        "At work I stare at my screen for hours and my mind just goes blank.",
        "I can't hold a thought long enough to finish it.",
        "I've been so scatterbrained {tp}, I lose track of everything.",
        "Picking a show to watch is too big a decision for me right now.",
    ),
    "SUICIDAL_THOUGHTS": (
        "I keep thinking about killing myself {t}.",
        "I don't want to be alive anymore.",
        "Sometimes I think everyone would be better off if I wasn't here.",
        "I've been thinking about ways to end it {tp}.",
        "I wish I could just go to sleep and not wake up.",
        "I wrote a note last week and it's still in my drawer.",
        "The thought of ending it all is the only thing that brings me any relief.",
        "I stood on the bridge for a long time last night.",
        "I don't see a reason to keep going {t}.",
        "I've been having suicidal thoughts {tp}.",
        "If I'm honest, I've thought about ending my life more than once {tp}.",
        "I'm scared of how often I think about dying.",
        "I just want it all to stop, permanently.",
        "I've started giving my stuff away because I don't plan on being around much longer.",
        "Every night I think about how easy it would be to just disappear for good.",
        "Every panic attack makes me feel more suicidal than the last.",
    ),
}

# Hard negatives (status 0): (kind, template). Kinds pick the explanation wording.
NEG: dict[str, tuple[tuple[str, str], ...]] = {
    "DEPRESSED_MOOD": (
        ("deny", "I'm not {mood} or anything, just {chill}."),
        ("past", "I used to be {mood} all the time {p}, but {h}."),
        ("other", "{r} has been {mood} {tp} and I don't know how to help."),
        ("brief", "I was {mood} for a day after {ev}, but honestly I bounced back fast."),
        ("deny", "Everyone keeps asking if I'm {mood}, but I'm genuinely doing fine."),
        ("hypo", "How do you tell if you're actually depressed or just {chill}?"),
        ("fine", "My mood has been pretty good {tp}, which is new for me."),
        ("fine", "I don't feel {mood} anymore -- things are finally looking up."),
        ("brief", "I cried at the end of a movie last night, but that's just me being a softie."),
    ),
    "ANHEDONIA": (
        ("fine", "I've been really into {hobby} {tp}, it keeps me busy."),
        ("past", "I lost interest in {hobby} {p}, but {h}."),
        ("other", "{r} says nothing is fun anymore and I'm worried about them."),
        ("deny", "I'm not bored of everything, I just don't have time for {hobby} with work."),
        ("fine", "I haven't had much time for {hobby} lately, but I still love it."),
        ("hypo", "Is it normal to lose interest in {hobby} after a few years?"),
        ("fine", "I still enjoy {hobby} and hanging out with friends, so it's not that."),
        ("fine", "I get really excited about {hobby}, that hasn't changed."),
        ("brief", "I didn't get round to {hobby} this weekend because of {ev}, no big deal."),
    ),
    "APPETITE_CHANGE": (
        ("fine", "My appetite is back to normal now."),
        ("brief", "I lost {wt} {p} on purpose for a half marathon."),
        ("fine", "I've been skipping {meal} because I started intermittent fasting."),
        ("other", "{r} has lost {wt} and barely eats, which worries me."),
        ("brief", "I had no appetite for a couple of days when I had the flu, but that passed."),
        ("brief", "I gained {wt} over the holidays like everyone else lol."),
        ("past", "I used to binge eat {p}, but {h}."),
        ("fine", "I'm eating well {t} and actually cooking for myself."),
        ("deny", "My appetite hasn't changed at all, I eat pretty normally."),
        ("hypo", "Does anyone else forget to eat when they're busy with a project?"),
    ),
    "SLEEP_ISSUES": (
        ("fine", "These days I sleep fine, which is honestly a relief."),
        ("past", "I used to have bad insomnia {p}, but {h}."),
        ("brief", "I stayed up until {late} last night finishing a game, my own fault lol."),
        ("other", "{r} can't sleep {t} and it has me worried."),
        ("fine", "I'm sleeping {hrs_ok} most nights now."),
        ("fine", "My sleep is actually the one thing that's fine."),
        ("brief", "I couldn't sleep the night before my exam, but that's just nerves."),
        ("brief", "The neighbour's dog woke me up at {early} once this week, super annoying."),
        ("hypo", "Is {hrs} of sleep enough to function for one night? Asking for a friend."),
        ("deny", "I don't have any trouble sleeping, I'm out as soon as my head hits the pillow."),
    ),
    "PSYCHOMOTOR": (
        ("brief", "I get restless before a big game, but that's just normal nerves."),
        ("fine", "I pace when I'm on the phone, always have, it's just a habit."),
        ("other", "{r} can't sit still {t} and the doctor thinks it's ADHD."),
        ("brief", "I felt slow and sluggish after my wisdom teeth surgery, but it went away."),
        ("past", "I used to fidget constantly {p}, but {h}."),
        ("deny", "I'm not restless or slowed down or anything, just {chill}."),
        ("brief", "My legs were bouncing during the interview, but who doesn't get nervous."),
        ("brief", "I've been moving slowly this week because I sprained my ankle."),
    ),
    "FATIGUE": (
        ("deny", "I'm not {fat} or anything, just {chill}."),
        ("brief", "I was {fata} after {ev}, but that's expected."),
        ("past", "I used to be {fat} {p}, but {h}."),
        ("other", "{r} has been {fat} {tp} with the new baby."),
        ("fine", "I have so much energy {t}, I've been running every morning."),
        ("deny", "I'm sick of {gripe}, not physically {fata} or anything."),
        ("fine", "My energy is way better now that I'm taking iron supplements."),
        ("hypo", "Is it normal to feel {fat} after donating blood?"),
        ("fine", "I don't feel {fata} at all, which surprised me."),
    ),
    "WORTHLESSNESS": (
        ("past", "I used to feel {wf} {p}, but {h}."),
        ("fine", "I don't feel {wf} anymore, I actually like who I am now."),
        ("other", "{r} keeps telling me they're {wn} and I don't know what to say."),
        ("brief", "I felt a bit guilty about skipping {ev}, but it's not a big deal."),
        ("fine", "I'm proud of myself for sticking to the gym {t}."),
        ("brief", "My boss made me feel {wf} in that meeting, but he does that to everyone."),
        ("deny", "I messed up a presentation today, but I know I'm not {wn} because of it."),
        ("deny", "I'm not {wn}, my ex just liked to tell me I was."),
        ("past", "Therapy helped me see that I'm not {wn}."),
        ("brief", "I'm trying to socialise and make friends, but I mess it up sometimes."),
    ),
    "COGNITIVE_ISSUES": (
        ("brief", "I can't focus when my roommate is blasting music, but who could."),
        ("past", "I used to have brain fog {p}, but {h}."),
        ("other", "{r} has been really forgetful {tp} and we're getting them checked."),
        ("fine", "I'm super focused {t}, finally getting through my backlog."),
        ("fine", "I'm indecisive about paint colours, but that's just me being picky lol."),
        ("fine", "I forgot my keys twice this week, which is pretty normal for me."),
        ("deny", "My concentration is fine, it's {gripe} that's the problem."),
        ("brief", "I couldn't concentrate during the lecture because I had a cold."),
        ("hypo", "Does coffee actually help you focus or is that a myth?"),
    ),
    "SUICIDAL_THOUGHTS": (
        ("deny", "I'm not suicidal, just tired of {gripe}."),
        ("past", "I had suicidal thoughts {p}, but {h}."),
        ("other", "{r} told me they've been thinking about suicide and I don't know how to help."),
        ("deny", "To be clear, I don't want to die, I just want things to change."),
        ("deny", "I'd never actually kill myself, I love my family too much."),
        ("brief", "My {course} assignment is literally killing me lol."),
        ("other", "I watched a documentary about suicide prevention and it really stuck with me."),
        ("deny", "I have too many dreams to want to die, I just need a break."),
        ("hypo", "If I ever had thoughts of ending it I'd call a hotline, but I'm not there."),
        ("brief", "This traffic makes me want to die lmao."),
    ),
}

# SPECIAL_CASE: clinically relevant but outside the nine criteria; (description, template).
SPECIAL: tuple[tuple[str, str], ...] = (
    ("panic attacks", "I've been having panic attacks {tp}."),
    ("derealisation", "I feel like I'm watching my life through a screen, nothing feels real."),
    ("a history of self-harm", "I used to self-harm {p} and the urge still comes back."),
    ("trauma-related flashbacks", "I get flashbacks to {trauma} {t}."),
    ("severe anxiety", "My anxiety is through the roof {t}."),
    ("irritability", "I'm so irritable {t} that I snap at everyone."),
    ("intrusive thoughts", "I keep having intrusive thoughts that I can't shake."),
    ("loneliness", "I feel so lonely {t}, like nobody really knows me."),
    ("alcohol use", "I've been drinking every night {tp} just to get through it."),
    ("body image distress", "I hate my body and I can't look in the mirror."),
    ("a psychiatric diagnosis", "I was diagnosed with {dx} {p}."),
    ("dissociation", "I've felt disconnected from my own body {tp}."),
)

# One sentence showing two symptoms (the real data has such double-labelled sentences).
COMBO: dict[tuple[str, str], tuple[str, ...]] = {
    ("SLEEP_ISSUES", "FATIGUE"): (
        "I can't sleep at night and then I'm {fat} all day.",
        "I'm up until {late} every night and I have zero energy {t}.",
        "I sleep {hrs_long} and still wake up {fat}.",
        "Between the insomnia and the constant exhaustion I'm barely functioning.",
    ),
    ("DEPRESSED_MOOD", "WORTHLESSNESS"): (
        "I feel so sad and {wf} {t}.",
        "I'm {mood} and I hate myself for {fault}.",
        "I cry every night because I feel like such a failure.",
    ),
    ("DEPRESSED_MOOD", "ANHEDONIA"): (
        "I'm {mood} and nothing is fun anymore, not even {hobby}.",
        "Everything feels empty, even {hobby} doesn't make me happy.",
        "I'm so down {t} that I've stopped caring about {hobby}.",
    ),
    ("WORTHLESSNESS", "SUICIDAL_THOUGHTS"): (
        "I'm such a burden that sometimes I think everyone would be better off without me.",
        "I feel {wf} and I keep thinking about ending it.",
        "I don't deserve to be alive.",
    ),
    ("FATIGUE", "COGNITIVE_ISSUES"): (
        "I'm so {fata} {t} that I can't focus on anything.",
        "My brain is foggy and my body is {fata} no matter what I do.",
    ),
    ("DEPRESSED_MOOD", "APPETITE_CHANGE"): (
        "I'm so sad I can barely eat.",
        "I've been eating my feelings {tp} because I'm miserable.",
    ),
}

# Neutral life sentences: most of every post. A few touch symptom topics in passing
# (a late night, a pizza, a tiring drive) because real posts do, unannotated.
FILLER: tuple[str, ...] = (
    "Work has been {work_state} since {work_event}.",
    "I work part time at {job} while I figure things out.",
    "I'm in my {year} year of {subject}.",
    "I have a {course} exam next week that I should be studying for.",
    "My {pet} {pet_act}.",
    "I've been playing {game} with some online friends.",
    "My {fam} is visiting {when_f}.",
    "It's been {weather} here all week.",
    "I moved to {place} {when_p} for {why}.",
    "Rent went up again, which is great.",
    "I live with two roommates in a tiny flat.",
    "I started {activity} {when_p}.",
    "My {fam} and I {fam_act}.",
    "The bus to work takes about forty minutes each way.",
    "My car broke down {when_p} and the repair wasn't cheap.",
    "I've been trying to save money for {goal}.",
    "My friend group mostly talks in a group chat now.",
    "We had {junk} for dinner on Friday.",
    "I stayed up late to watch the game with my {fam}.",
    "I was tired after the long drive home, so I went straight to bed.",
    "I've been rewatching {show} for the third time.",
    'My manager literally said "{quote}" in our last meeting.',
    "My {fam} keeps asking when I'm going to get my license.",
    "I switched phones {when_p} and lost all my photos.",
    "I've been thinking about going back to school at some point.",
    "My parents split up {when_p}, but we're all on decent terms.",
    "We adopted a {pet} {when_p} and it's been chaos.",
    "I go to the gym maybe twice a week, nothing serious.",
    "I had a job interview {when_p} -- still waiting to hear back.",
    "My {fam} thinks I spend too much time on my phone, which is fair.",
    "My best friend moved to {place} {when_p} and I miss having her around.",
    "My commute got longer after {work_event}.",
    "I cooked pasta for the first time in ages yesterday.",
    "I'm planning a small trip {when_f} if money allows.",
    "The weekend went by way too fast.",
    "I mostly keep to myself at {job}.",
    "My {fam} got a new puppy and sends me pictures every day.",
    "I finally fixed the leaky tap in the bathroom {when_p}.",
    "Our team lost the league final {when_p}, which stung a bit.",
    "I've been meaning to clean my room for a while now.",
    "My laptop is ancient and takes forever to boot.",
    "I took the train to visit my {fam} {when_p}.",
    "There's a new coffee place near my flat that's actually decent.",
    "I'm halfway through {show} and I have opinions.",
    "My {fam} works nights, so we mostly text.",
    "I signed up for {activity} because a coworker dragged me along.",
    "Our group project partner hasn't replied in a week.",
    "Money is tight but we're managing.",
    "I got my wisdom teeth out {when_p}.",
    "The landlord still hasn't fixed the heating.",
    "I mostly play {game} on weekends.",
    "My {pet} is asleep on my lap as I type this.",
    "I changed my major {when_p}, now I'm doing {subject}.",
    "We're moving to a bigger place {when_f}.",
    "I had a pretty normal childhood, nothing dramatic.",
    "I've got a shift at {job} tomorrow morning.",
)

# Post openers and sign-offs: placed first and last, as on Reddit.
FILLER_INTRO: tuple[str, ...] = (
    "Throwaway account because my friends follow my main.",
    "Sorry for the long post, I'm on mobile so formatting might be weird.",
    "English isn't my first language so sorry for any mistakes.",
    "I don't really know where else to post this.",
    "This might be a long one, sorry.",
    "I'm {age}{sex} for context.",
    "I don't post much, I mostly lurk here.",
    "So here's the situation.",
    "Some background first.",
    "I know this sub gets a lot of posts like this.",
    "Long time lurker, first time posting.",
    "Not sure if this is the right sub for this.",
    "Mods, delete this if it's not allowed.",
)
FILLER_OUTRO: tuple[str, ...] = (
    "Has anyone else dealt with {ask}?",
    "Any advice would be appreciated.",
    "What would you do in my position?",
    "Does anyone have tips for {tip}?",
    "Thanks for reading if you made it this far.",
    "Edit: thanks everyone for the replies, I'm reading all of them.",
    "I'm not really sure what I'm asking for here.",
    "Anyway, that's the backstory.",
    "Sorry for rambling.",
    "I just needed to get this off my chest.",
    "Any thoughts?",
)

EXPLAIN_POS: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": ("a persistent sad or empty mood", "ongoing low mood and tearfulness"),
    "ANHEDONIA": (
        "a loss of interest or pleasure in usual activities",
        "markedly reduced enjoyment",
    ),
    "APPETITE_CHANGE": (
        "a clear change in appetite or weight",
        "disturbed eating or weight change",
    ),
    "SLEEP_ISSUES": ("insomnia or oversleeping", "a disturbed sleep pattern"),
    "PSYCHOMOTOR": ("psychomotor agitation or slowing", "restlessness or slowed movement"),
    "FATIGUE": (
        "persistent fatigue or loss of energy",
        "exhaustion that does not improve with rest",
    ),
    "WORTHLESSNESS": (
        "feelings of worthlessness or excessive guilt",
        "a harsh, negative self-image",
    ),
    "COGNITIVE_ISSUES": ("trouble concentrating or making decisions", "impaired focus and memory"),
    "SUICIDAL_THOUGHTS": ("recurrent thoughts of death or suicide", "suicidal ideation"),
}
TOPIC: dict[str, str] = {
    "DEPRESSED_MOOD": "mood or sadness",
    "ANHEDONIA": "interest in activities",
    "APPETITE_CHANGE": "eating or weight",
    "SLEEP_ISSUES": "sleep",
    "PSYCHOMOTOR": "restlessness or slowness",
    "FATIGUE": "tiredness or energy",
    "WORTHLESSNESS": "self-worth or guilt",
    "COGNITIVE_ISSUES": "focus or memory",
    "SUICIDAL_THOUGHTS": "death or suicide",
}
EXPLAIN_LEAD = (
    "The user describes",
    "This sentence reports",
    "The poster mentions",
    "Here the author expresses",
    "The writer reports",
    "This statement reflects",
)
EXPLAIN_TAIL = (
    ", consistent with the corresponding DSM-5 criterion for major depressive disorder.",
    "; if it lasts two weeks or more it matches a DSM-5 criterion for depression.",
    ", which is a recognised symptom of depression in DSM-5.",
    ", a pattern often seen in depressive episodes.",
)
NEG_REASON = {
    "deny": "the author explicitly denies experiencing it",
    "past": "it describes a past episode that has since resolved",
    "other": "it is about someone else rather than the author",
    "hypo": "it is a question or hypothetical rather than a report",
    "brief": "it describes a brief, situational reaction rather than a persistent symptom",
    "fine": "it describes normal or healthy functioning",
}
NEG_TAIL = (
    ", so it does not meet the DSM-5 criterion.",
    "; it is not evidence of the symptom.",
    ", so it does not indicate a depressive symptom here.",
)
SPECIAL_TAIL = (
    ", which is clinically relevant but not one of the nine DSM-5 depression criteria.",
    "; worth noting, though it does not map onto a single DSM-5 depression criterion.",
)
OPENERS = (
    "Honestly, ",
    "Like, ",
    "Idk, ",
    "Tbh ",
    "Not gonna lie, ",
    "So yeah, ",
    "Ugh, ",
    "Anyway, ",
    "I guess ",
    "Basically, ",
    "And ",
    "But ",
    "Also ",
    "On top of that, ",
    "Plus ",
)
