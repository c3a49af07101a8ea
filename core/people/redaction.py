"""Personal data masked in free text: what Open311 publishes, and what a console role that
may not see phone numbers and names reads. One pure function, ``redact(text, names,
policy)``; every place that shows a resident's words to someone who may not see who they
are goes through it.

It masks, in Chinese text typed, pasted or recognised from speech (no punctuation, digits
as Chinese numerals, spaces between words):

* e-mail addresses, also spoken (``wxm艾特qq点com``), and WeChat/QQ ids after their label;
* any run of seven digits or more, whatever separates them (``139-1234-5678``, ``+86 139
  1234 5678``, ``0591-88881234``, ``幺三九一二三四五六七八``): phone and identity numbers
  (with an identity number's final X);
* building, unit and room numbers (``2幢3单元202室``, ``5栋``, ``3号楼``, ``602号房``,
  ``2-3-202``), when the policy says so;
* personal names: the names known for the case (its resident and their household), also
  written with other characters of the same sound, as a recogniser writes them; names a
  speaker introduces (``我叫…``, ``我是…``, ``本人…``, ``我姓…``); a surname before a
  form of address (``王先生``, ``李阿姨``); names after a neighbour or a relative
  (``邻居李四``), and nicknames (``老王``).

Street, estate and category words stay readable. It is a heuristic for the unknown names
(the known ones are certain): it prefers masking a word too many to leaking a name."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import lazy_pinyin

MIN_SECRET_DIGITS = 7  # a landline without area code has 7; nothing shorter is a phone number
CONFIDENTIAL_DIGITS = 3  # a confidential case: every number that could point at the resident


@dataclass(frozen=True)
class Policy:
    """How much is masked, and how it reads."""

    places: bool  # building, unit and room numbers too
    phone_tail: bool  # a mobile number as 138****2419 (enough to tell two apart), else ***
    name_initial: bool  # a name as 陈** (the surname stays), else **
    # Digit runs this long or longer are masked: 7 catches every phone and identity number;
    # a confidential case (保密) masks every run of 3 or more (house, room and plate numbers,
    # ages, sums too: a number the resident spoke may point at them; it prefers a digit too many).
    min_digits: int = MIN_SECRET_DIGITS


# What the public reads (Open311): nothing that points at a person or a flat.
PUBLIC = Policy(places=True, phone_tail=False, name_initial=False)
# What a console role that may not see phones and names reads: the place stays (it is the
# work: a department has to find the broken pipe), the person goes.
STAFF = Policy(places=False, phone_tail=True, name_initial=True)
# What a role that may not see a confidential case's resident reads of it (worker,
# department, supervisor; Open311 too): no name, no number of three digits or more, no
# building, unit, room or door number, no phone tail.
CONFIDENTIAL = Policy(places=True, phone_tail=False, name_initial=False, min_digits=CONFIDENTIAL_DIGITS)

NUMBER_MASK = "***"
PLACE_MASK = "**"
NAME_MASK = "**"

# ---- digits -------------------------------------------------------------------------------

# Digits as they are written or spoken, one character each (so positions stay aligned).
_DIGIT_OF = {**{c: str(i) for i, c in enumerate("零一二三四五六七八九")}, "〇": "0", "幺": "1", "两": "2"}


def _digit_view(text: str) -> str:
    """The text with every digit character (full-width, Chinese) as an ASCII digit."""
    out = []
    for ch in text:
        if ch in _DIGIT_OF:
            out.append(_DIGIT_OF[ch])
        elif ch.isdecimal():
            out.append(str(unicodedata.decimal(ch, 0)))
        else:
            out.append(ch)
    return "".join(out)


# A run of digits and what people put between them (spaces, dashes, dots, brackets, a plus).
_RUN = re.compile(r"[+＋(（]?[0-9](?:[\s\-－‐–—.．·()（）/]{0,3}[0-9])*(?:\s?[Xx×])?")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")


def _number_spans(text: str, view: str, policy: Policy) -> list[tuple[int, int, str]]:
    spans = []
    for m in _RUN.finditer(view):
        raw = m.group(0)
        digits = re.sub(r"\D", "", raw)
        ends_x = raw[-1] in "Xx×"
        if len(digits) < policy.min_digits or (_DATE.fullmatch(raw.strip()) and policy.min_digits >= MIN_SECRET_DIGITS):
            continue
        start, end = m.start(), m.end()
        if ends_x and len(digits) != 17:  # an X is part of an identity number only
            end -= len(raw) - len(raw.rstrip("Xx× "))
        if digits.startswith("86") and len(digits) == 13:
            digits = digits[2:]
        if policy.phone_tail and len(digits) == 11 and re.match(r"1[3-9]", digits):
            spans.append((start, end, f"{digits[:3]}****{digits[-4:]}"))
        else:
            spans.append((start, end, NUMBER_MASK))
    return spans


# ---- e-mail, messenger ids ----------------------------------------------------------------

_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-]+\s*(?:@|＠|艾特|圈a)\s*[A-Za-z0-9\-]+(?:\s*(?:\.|．|点|dot)\s*[A-Za-z]{2,})+", re.I)
_MESSENGER = re.compile(
    r"(?:微信号?|QQ号?|qq号?|VX|vx|wx|WX)\s*(?:号码|号)?\s*[:：是为]?\s*([A-Za-z][A-Za-z0-9_\-]{4,}|[0-9]{5,})")

# ---- places -------------------------------------------------------------------------------

_N = r"[0-9０-９零〇一二三四五六七八九十百两幺]{1,6}"
_NA = r"(?:[A-Za-z]?[0-9０-９]{1,6}|[A-Za-z])"  # 座 only after a digit or letter (一座桥 is no address)
_PLACE = re.compile(
    rf"(?P<dash>(?<![0-9\-])[0-9]{{1,3}}-[0-9]{{1,3}}-[0-9]{{2,4}}(?![0-9\-]))"
    rf"|(?P<num>{_N}|[0-9]{{1,3}}-[0-9]{{2,4}})(?=\s?(?:号楼|号房|号院|房间|幢|栋|单元|室|#|＃))"
    rf"|(?<=[路街巷村弄里道])(?P<door>{_N})(?=号)"
    rf"|(?:(?<=单元)|(?<=号楼)|(?<=[幢栋座#＃]))(?P<room>[0-9０-９零〇一二三四五六七八九幺两]{{2,4}})(?![0-9０-９])"
    rf"|(?P<seat>{_NA})(?=座)")

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ---- names --------------------------------------------------------------------------------

# Common surnames. The weak ones also begin ordinary words (高层, 向社区, 江边, 方便), so the
# looser rules (我是…, 邻居…, 老…) skip them; the strong rules (我叫…, 王先生) take them.
_STRONG = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡杜叶程苏魏吕丁"
    "沈姚卢姜崔钟谭陆汪范廖贾夏韦付邹孟熊秦邱尹薛闫阎段雷侯史陶黎贺顾毛郝龚邵覃戴莫孔汤牛樊葛邢"
    "乔伍庞颜倪庄聂鲁岳翟殷詹耿焦俞柳祝舒阮柯纪童裴霍涂翁冉骆靳柴蒙鲍喻祁蒲滕饶牟艾穆卓缪褚娄窦"
    "戚岑瞿佟臧闵苟邬卞姬栾隋刁巫寇桑郎甄仲虞敖巩佘邝")
_WEAK = set("高金石白江方于余任齐易施章左梅文安和明成时全应路车商师向常温单关党管解简阳农司古景费卫"
            "米宗桂边沙荣查麻池连华游宁包甘龙万严武曲兰尚凌毕季盛苗谷钱欧申符蓝辛兰欧尤卜冷晏席宫")
_COMPOUND = ("欧阳", "司马", "诸葛", "上官", "东方", "慕容", "夏侯", "皇甫", "尉迟", "公孙", "令狐", "长孙",
             "宇文", "司徒", "端木", "西门", "独孤", "南宫")
SURNAMES = frozenset(_STRONG | _WEAK)
# Characters that (almost) never stand in a given name but often follow one.
_NOT_IN_NAME = set(
    "的了是在和与跟个位家里边说住们这那我你他她它也都就还又要想去来到把被给让叫姓电话手机号年月日点"
    "楼栋幢单元室区路街道村门口上下很太不没有吗呢吧啊呀哦嗯哈找向对从往今昨现已经常每总"
    "，。、！？；：,.!?;: \t\n\r（）()“”\"'《》0123456789")
# Where a name plainly ends: punctuation, or a word a speaker says next (住在…, 今年…, 电话…).
_NAME_END = set("，。、！？；：,.!?;: \t\n\r（）()“”\"'住今家电手身的是我")
_HAN = r"[\u4e00-\u9fff]"
_GIVEN = r"[\u4e00-\u9fff]"
_ADDRESS = ("先生|女士|小姐|阿姨|大爷|大妈|大娘|大叔|大伯|大哥|大姐|奶奶|爷爷|老师|师傅|老板|主任|书记|经理|"
            "医生|同志|老太|老头|婆婆|伯伯|叔叔|阿婆|阿伯|姐姐|哥哥|老人家|老太太|老爷子")
_RELATIONS = ("邻居|隔壁|对门|对面|楼上|楼下|儿子|女儿|老伴|丈夫|妻子|老公|老婆|母亲|父亲|爸爸|妈妈|孙子|孙女|"
              "儿媳|女婿|房东|租户|租客|业主|同事|朋友|亲戚|弟弟|妹妹|哥哥|姐姐")
# Words after 我是 / 邻居 that begin with a surname and are no name.
_WORDS = _words("""高层 楼上 楼下 楼长 周边 周围 周末 金融 江边 方便 单元 单位 白天 黄昏 马路 林业 石头 宋体
 何时 许多 许可 曾经 田地 董事 毛病 钟点 程序 陆续 范围 孔洞 汤水 牛奶 党员 管理 解决 简单 农村 古镇 景区
 费用 卫生 米饭 宗教 边上 沙发 荣誉 查看 连续 华侨 游客 宁可 包括 甘心 龙头 万一 严重 武警 曲折 兰花 尚未
 毕业 季节 盛夏 苗木 谷物 钱财 申请 符合 蓝色 辛苦 冷水 席位 宫殿 温度 常年 安全 和谐 明天 成都 时候 全部
 应该 路灯 车辆 商铺 师傅 向来 文明 施工 章程 左边 梅雨 于是 余下 任何 齐全 易燃 杨树 黄色 朱红 胡同 罗马
 郑重 梁柱 谢谢 唐朝 韩国 冯河 邓家 曹操 彭湃 肖像 潘多 蒋介 蔡家 杜绝 叶子 苏醒 魏晋 吕梁 丁字 沈阳 姚明
 卢沟 姜汤 崔嵬 钟表 谭家 汪洋 廖家 贾家 夏天 夏季 韦家 付款 付钱 邹家 孟子 熊猫 秦朝 邱家 尹家 薛家 闫家
 段落 雷雨 雷电 侯车 史上 陶瓷 黎明 贺卡 顾客 顾问 郝家 龚家 邵家 覃家 戴着 莫名 孔子 樊家 葛家 邢台 乔迁
 伍家 庞大 颜色 倪家 庄稼 聂家 鲁莽 岳父 岳母 翟家 殷勤 詹家 耿直 焦急 焦虑 俞家 柳树 祝福 舒服 阮家 柯家
 纪律 童年 裴家 霍乱 涂料 涂鸦 翁家 冉冉 骆驼 靳家 柴火 蒙住 鲍鱼 喻家 祁家 蒲扇 滕家 饶了 牟利 艾滋 穆斯
 卓越 缪家 褚家 娄家 窦家 戚家 岑家 瞿家 佟家 臧家 闵行 苟且 邬家 卞家 姬家 栾家 隋朝 刁难 巫婆 寇家 桑拿
 郎中 甄别 仲裁 虞家 敖包 巩固 佘家 邝家 李子 张贴 刘海 陈旧 王八 赵家 吴家 周期 徐徐 孙子 马上 朱家 郭家
 林子 吴江 周边 邻居 王府 李家 张家 刘家 陈家 杨家 黄家 周家 徐家 孙家 马家 胡家 何家 林家 罗家 郑家 梁家
 谢家 宋家 唐家 许家 韩家 冯家 曹家 彭家 曾家 肖家 田家 董家 袁家 潘家 蒋家 杜家 叶家 程家 苏家 魏家 吕家
 丁家 沈家 姚家 卢家 姜家 崔家 钟家 汪家 范家 夏家 孟家 熊家 秦家 江家 段家 雷家 侯家 史家 陶家 黎家 贺家
 顾家 毛家 孔家 汤家 牛家 乔家 庄家 鲁家 岳家 柳家 祝家 舒家 童家 霍家 涂家 翁家 骆家 柴家 蒙家 鲍家 饶家
 艾家 穆家 卓家""")

# The self-introductions: the name follows at once.
_SAYS_NAME = re.compile(r"(?:我叫|我名叫|名叫|叫做|我的名字叫|我的名字是|名字叫|名字是|姓名是?|姓名[:：]|本人(?!是))\s*")
_I_AM = re.compile(r"(?:我是|本人是|我就是|鄙人)\s*")
_SURNAME_WORD = re.compile(r"(?<!百)姓\s*")
_NICKNAME = re.compile(r"[老小]")
_RELATION = re.compile(rf"(?:{_RELATIONS})(?:的|是|叫|家的|家)?\s*")
_TITLE = re.compile(rf"(?={_ADDRESS})")


def _surname_at(text: str, i: int, strong_only: bool) -> int:
    """The length of the surname beginning at i (0: none)."""
    for compound in _COMPOUND:
        if text.startswith(compound, i):
            return len(compound)
    if i < len(text) and (text[i] in _STRONG or (not strong_only and text[i] in _WEAK)):
        return 1
    return 0


def _given_length(text: str, i: int, most: int = 2) -> int:
    n = 0
    while n < most and i + n < len(text) and re.match(_GIVEN, text[i + n]) and text[i + n] not in _NOT_IN_NAME:
        n += 1
    return n


def _boundary(text: str, i: int) -> bool:
    return i >= len(text) or text[i] in _NOT_IN_NAME


def _name_after(text: str, i: int, *, strong_only: bool, need_boundary: bool, any_surname: bool = False
                ) -> tuple[int, int] | None:
    """A name (surname + one or two given characters) beginning at i, or None. A surname
    outside the list is taken only where the name plainly ends (punctuation, 住…, 今年…)."""
    while i < len(text) and text[i] in " \t":
        i += 1
    s = _surname_at(text, i, strong_only)
    ends = _boundary
    if not s and any_surname and i < len(text) and re.match(_HAN, text[i]) and text[i] not in _NOT_IN_NAME:
        s, need_boundary, ends = 1, True, _plain_end
    if not s or (s == 1 and text[i:i + 2] in _WORDS):
        return None
    if re.match(_ADDRESS, text[i + s:]):  # 张阿姨: the surname is all there is
        return i, i + s
    for length in range(_given_length(text, i + s), 0, -1):
        end = i + s + length
        if not need_boundary or ends(text, end):
            return i, end
    return None


def _plain_end(text: str, i: int) -> bool:
    return i >= len(text) or text[i] in _NAME_END


def _name_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in _SAYS_NAME.finditer(text):
        hit = _name_after(text, m.end(), strong_only=False, need_boundary=False, any_surname=True)
        if hit:
            spans.append(hit)
    for m in _I_AM.finditer(text):
        hit = _name_after(text, m.end(), strong_only=True, need_boundary=True)
        if hit:
            spans.append(hit)
    for m in _RELATION.finditer(text):
        hit = _name_after(text, m.end(), strong_only=True, need_boundary=False)
        if hit:
            spans.append(hit)
    for m in _SURNAME_WORD.finditer(text):
        s = _surname_at(text, m.end(), strong_only=False)
        if s:
            spans.append((m.end(), m.end() + s))
    for m in _NICKNAME.finditer(text):
        i = m.end()
        s = _surname_at(text, i, strong_only=True)
        word = text[i:i + 2]
        if s and text[m.start():i + s + 1] not in _NICKNAME_WORDS and (word not in _WORDS or word.endswith("家")):
            spans.append((i, i + s))
    for m in _TITLE.finditer(text):
        spans.extend(_before_title(text, m.start()))
    return spans


# 老X / 小X words that are no nickname.
_NICKNAME_WORDS = _words("小孙子 小孙女 老黄牛 小黄车 老黄历 小周末 老林子 小林子 小张贴 老毛病 小毛病 小胡同 老胡同 "
                            "老杨树 老陈醋 小马路 老马路 老宋体 小叶子 老叶子 老石头 小石头")
# Two characters that end in a weak surname before a form of address and are a trade: 门卫大爷.
_TRADES = _words("门卫 环卫 保卫 修车 开车 司车 物管 主管 高管 监管 城管 保管 网管 房管")


def _before_title(text: str, t: int) -> list[tuple[int, int]]:
    """王先生, 李秀英阿姨: the surname (and given name) just before a form of address."""
    for given in range(0, 3):
        i = t - given
        for s_len in (2, 1):
            start = i - s_len
            if start < 0:
                continue
            s = _surname_at(text, start, strong_only=given > 0)
            if s != s_len or (given == 0 and text[start - 1:start + 1] in _TRADES):
                continue
            between = text[i:t]
            if any(ch in _NOT_IN_NAME or not re.match(_HAN, ch) for ch in between):
                continue
            if given and text[start:start + 2] in _WORDS:
                continue
            return [(start, t)]
    return []


@lru_cache(maxsize=4096)
def _syllables(text: str) -> tuple[str, ...]:
    return tuple(lazy_pinyin(text, errors=lambda chars: ["?"] * len(chars)))


def _known_spans(text: str, names: Iterable[str]) -> list[tuple[int, int]]:
    """Where the case's known names stand: written alike (spaces between the characters
    allowed), the given name alone, or a name that sounds the same (a recogniser's 王晓明 for
    王小明) with the surname written alike."""
    spans: list[tuple[int, int]] = []
    han = [(i, ch) for i, ch in enumerate(text) if re.match(_HAN, ch)]
    han_text = "".join(ch for _, ch in han)
    han_syllables = _syllables(han_text) if han_text else ()
    for name in {n.strip() for n in names if n and n.strip()}:
        name = re.sub(r"\s+", "", name)
        pattern = r"\s*".join(map(re.escape, name))
        spans.extend((m.start(), m.end()) for m in re.finditer(pattern, text))
        s = _surname_at(name, 0, strong_only=False) or 1
        given = name[s:]
        if len(given) >= 2:  # 小明 alone, but not 建国 in 建国路
            for m in re.finditer(r"\s*".join(map(re.escape, given)), text):
                if not re.match(r"\s*(?:路|街|大道|巷|村|小区|花园|新村|公园|广场|大厦|中学|小学)", text[m.end():]):
                    spans.append((m.start(), m.end()))
        if len(name) < 2 or len(han_syllables) != len(han_text):
            continue
        wanted = _syllables(name)
        for k in range(len(han_text) - len(name) + 1):
            if han_text[k] == name[0] and han_syllables[k:k + len(name)] == wanted:
                spans.append((han[k][0], han[k + len(name) - 1][0] + 1))
    return spans


# ---- the function -------------------------------------------------------------------------


def redact(text: str | None, names: Iterable[str] = (), policy: Policy = PUBLIC) -> str:
    """``text`` with the personal data in it masked; ``names`` are the names known for the
    case (its resident's, their household's)."""
    if not text:
        return text or ""
    spans: list[tuple[int, int, str]] = []
    for m in _EMAIL.finditer(text):
        spans.append((m.start(), m.end(), NUMBER_MASK))
    for m in _MESSENGER.finditer(text):
        spans.append((m.start(1), m.end(1), NUMBER_MASK))
    spans.extend(_number_spans(text, _digit_view(text), policy))
    if policy.places:
        for m in _PLACE.finditer(text):
            group = m.lastgroup or "num"
            spans.append((m.start(group), m.end(group), PLACE_MASK))
    for start, end in _known_spans(text, tuple(names)) + _name_spans(text):
        spans.append((start, end, _NAME))
    return _apply(text, spans, policy)


_NAME = ""  # a span's replacement decided once overlapping names are joined


def _name_mask(name: str, policy: Policy) -> str:
    name = re.sub(r"\s+", "", name)
    s = _surname_at(name, 0, strong_only=False)
    if not policy.name_initial:
        return NAME_MASK
    if s and len(name) == s:  # 老王, 王先生, 姓王: the surname the staff page shows anyway
        return name
    return mask_name(name) if s else NAME_MASK


def _apply(text: str, spans: list[tuple[int, int, str]], policy: Policy) -> str:
    """Replace the spans; overlapping spans become one (a name if all were names)."""
    merged: list[list] = []
    for start, end, repl in sorted(spans):
        if start >= end:
            continue
        if merged and start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            if last[2] != repl:
                last[2] = NUMBER_MASK
            continue
        merged.append([start, end, repl])
    out, at = [], 0
    for start, end, repl in merged:
        out.append(text[at:start])
        out.append(_name_mask(text[start:end], policy) if repl == _NAME else repl)
        at = end
    out.append(text[at:])
    return "".join(out)


def is_personal_query(term: str) -> bool:
    """Whether a search for ``term`` looks for a person: a digit in it (part of a phone or
    identity number, written or spoken), an ``@``, or the shape of a name (a surname and one
    or two characters)."""
    term = (term or "").strip()
    if not term:
        return False
    view = _digit_view(term)
    if any(ch.isdigit() for ch in term) or re.search(r"[0-9]{3}", view) or "@" in term or "＠" in term:
        return True
    s = _surname_at(term, 0, strong_only=False)
    return bool(s) and 1 <= len(term) - s <= 2 and all(re.match(_HAN, ch) for ch in term) \
        and term[:2] not in _WORDS


def mask_phone(phone: str | None) -> str:
    """138****2419: enough to tell numbers apart on a list, not enough to call."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", phone)
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:3]}****{digits[-4:]}"


def mask_name(name: str | None) -> str:
    """陈**: the surname stays, the rest goes."""
    if not name:
        return ""
    return name[0] + "*" * max(1, len(name) - 1)
